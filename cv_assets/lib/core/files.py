"""Local paths for artifacts: the file itself on a local store, a cached download on S3; and
scratch folders that clean themselves up."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cv_assets.lib.core.store import ArtifactStore


def local_file(store: ArtifactStore, uri: str, cache: Path) -> Path:
    """A local path for an artifact: the file itself when local, a cached download on S3."""
    key = store.key_of(uri)
    local = store.local_path(key)
    if local is not None:
        return local
    dest = cache / key
    if not dest.exists():
        store.download(key, dest)
    return dest


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"cv_assets_{prefix}_")
