"""The raw copy of a landed batch: immutable, with a manifest of every file's sha256.

The copy is what the rest of the platform reads, so a producer that later deletes or rewrites its
landing folder cannot change what was ingested. Files whose names are unsafe to use as a path
(traversal, non-portable characters, names that are not UTF-8 or too long) are hashed and recorded
but not copied; links are never followed; a file that cannot be read is recorded as
``unreadable``. All of them are quarantined, with their reason, at validation.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.landing import (
    MAX_CLASSES,
    BatchRefused,
    LandingZone,
    Manifest,
    ManifestEntry,
    changed_batch_refusal,
    parse_marker,
)
from cv_assets.lib.ingest.names import is_portable_path
from cv_assets.lib.ingest.records import RawBatch

# Concurrent reads of the duplicate index; matches the S3 client's connection pool
# (lib/core/store.py).
READ_WORKERS = 32


def _record(
    store: ArtifactStore, manifest: Manifest, manifest_sha: str, seconds: float, reused: bool
) -> RawBatch:
    files = [e for e in manifest.entries if e.kind == "file"]
    return {
        "batch_id": manifest.batch_id,
        "manifest_uri": store.uri(layout.raw_manifest(manifest.batch_id)),
        "manifest_sha256": manifest.sha256,
        "manifest_file_sha256": manifest_sha,
        "files_key": layout.raw_files(manifest.batch_id),
        "classes": manifest.marker.get("classes"),
        "n_files": len(manifest.entries),
        "n_bytes": sum(e.size for e in files),
        "seconds": round(seconds, 3),
        "reused": reused,
    }


def load_raw_manifest(store: ArtifactStore, batch_id: str) -> Manifest | None:
    key = layout.raw_manifest(batch_id)
    if not store.exists(key):
        return None
    return Manifest.from_dict(json.loads(store.get_bytes(key)))


def copy_raw_batch(
    zone: LandingZone,
    store: ArtifactStore,
    batch_id: str,
    classes: Sequence[str],
    max_classes: int = MAX_CLASSES,
) -> RawBatch:
    """Copy a landed batch into the store once; the same batch again is a no-op.

    Raises ``BatchRefused`` when the batch id was ingested before with a different manifest (the
    message says which files changed, were added or removed), when the batch folder is a symbolic
    link, or when ``batch.json`` breaks the contract. Nothing is written in any of these cases.
    A file that cannot be read is recorded as ``unreadable`` (validation quarantines it).
    """
    t0 = time.perf_counter()
    zone.refuse_linked_batch(batch_id)
    existing = load_raw_manifest(store, batch_id)
    if existing is not None:
        landed = zone.manifest(batch_id, classes, max_classes)
        if landed.sha256 != existing.sha256:
            raise BatchRefused(changed_batch_refusal(batch_id, existing, landed))
        raw = store.get_bytes(f"{layout.raw_prefix(batch_id)}/manifest.json")
        sha = hashlib.sha256(raw).hexdigest()
        return _record(store, existing, sha, time.perf_counter() - t0, reused=True)

    marker_raw = zone.read(batch_id, "batch.json")
    marker = parse_marker(batch_id, marker_raw, classes, max_classes)
    entries: list[ManifestEntry] = []
    # One pass: each file is read once, hashed and copied, so the copy is exactly what was hashed.
    for rel, kind, size in zone.walk(batch_id):
        if rel == "batch.json":
            continue
        digest = None
        if kind == "file":
            data = zone.read_landed(batch_id, rel)
            if data is None:
                kind, size = "unreadable", 0
            else:
                digest = hashlib.sha256(data).hexdigest()
                size = len(data)
                if is_portable_path(rel):
                    store.put_bytes(f"{layout.raw_prefix(batch_id)}/files/{rel}", data)
        entries.append(ManifestEntry(PurePosixPath(rel).as_posix(), kind, size, digest))
    entries.sort(key=lambda e: e.path)
    manifest = Manifest(batch_id=batch_id, marker=marker, entries=entries)
    store.put_bytes(f"{layout.raw_prefix(batch_id)}/files/batch.json", marker_raw)
    body = manifest.as_dict() | {"copied_at": datetime.now(UTC).isoformat()}
    ref = store.put_bytes(
        f"{layout.raw_prefix(batch_id)}/manifest.json", json.dumps(body, indent=1).encode()
    )
    return _record(store, manifest, ref.sha256, time.perf_counter() - t0, reused=False)


class DedupIndex:
    """sha256 of every image accepted so far, and which batch accepted it first.

    Stored as one small file per batch (``dedup/<batch>.json``) so that validating a batch reads
    ``O(batches)`` small files and never the images themselves. "Earlier" means validated earlier:
    re-validating a batch never makes its images duplicates of a batch that came after it.
    """

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def _load(self, key: str) -> dict[str, Any]:
        return json.loads(self.store.get_bytes(key))

    def first_validated_at(self, batch_id: str) -> str | None:
        key = layout.dedup_index(batch_id)
        return self._load(key)["first_validated_at"] if self.store.exists(key) else None

    def seen_before(self, batch_id: str, pool: set[str] | None = None) -> dict[str, str]:
        """sha256 -> ``batch/path`` of every image taken in before ``batch_id``; ``pool``, when
        given, receives the digests of those that are in the unlabelled pool."""
        mine = self.first_validated_at(batch_id)
        seen: dict[str, str] = {}
        keys = [
            k
            for k in self.store.list(layout.DEDUP_PREFIX)
            if k.endswith(".json") and k != layout.dedup_index(batch_id)
        ]
        # One GET per earlier batch: on S3 each costs a round trip, so they are read concurrently
        # (docs/scaling.md: 10,000 batches at ~15 ms a GET would be minutes, one after another).
        # A local disk answers faster than threads start, so there they are read in turn.
        if self.store.local_path(layout.DEDUP_PREFIX.rstrip("/")) is not None or READ_WORKERS == 1:
            loaded = [self._load(k) for k in keys]
        else:
            with ThreadPoolExecutor(max_workers=READ_WORKERS) as workers:
                loaded = list(workers.map(self._load, keys))
        for d in loaded:
            if mine is not None and d["first_validated_at"] >= mine:
                continue
            for digest, path in d["images"].items():
                seen.setdefault(digest, f"{d['batch_id']}/{path}")
            if pool is not None:
                pool.update(d.get("unlabelled", ()))
        if pool is not None:  # labelled since, by a later batch: no longer in the pool
            labelled = {g for d in loaded for g in d.get("labelled_pool", ())}
            pool.difference_update(labelled)
        return seen

    def record(
        self,
        batch_id: str,
        images: dict[str, str],
        unlabelled: Iterable[str] = (),
        labelled_pool: Iterable[str] = (),
    ) -> None:
        """``images``: sha256 -> path of every image the batch took in; ``unlabelled``: those of
        them in the pool; ``labelled_pool``: pool images of earlier batches it labelled."""
        first = self.first_validated_at(batch_id) or datetime.now(UTC).isoformat()
        body: dict[str, Any] = {"batch_id": batch_id, "first_validated_at": first, "images": images}
        if unlabelled := sorted(unlabelled):
            body["unlabelled"] = unlabelled
        if labelled_pool := sorted(labelled_pool):
            body["labelled_pool"] = labelled_pool
        self.store.put_bytes(layout.dedup_index(batch_id), json.dumps(body).encode())
