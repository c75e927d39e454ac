"""Annotation files through the import adapters, in memory, with the accounting checked."""

from collections.abc import Mapping, Sequence

from cv_assets.lib.ingest.formats import import_batch
from cv_assets.lib.ingest.formats.base import Imported
from cv_assets.lib.synth.batches import CLASSES


def import_files(
    fmt: str,
    files: Mapping[str, bytes],
    images: Sequence[str] = ("images/a.jpg",),
    classes: Sequence[str] = CLASSES,
    aliases: Mapping[str, str] | None = None,
    max_bytes: int = 64 * 2**20,
) -> Imported:
    """``import_batch`` over ``files`` (path -> bytes); every annotation must be accounted for."""
    listed = [(path, len(raw)) for path, raw in files.items()]
    out = import_batch(fmt, listed, files.__getitem__, images, classes, aliases, max_bytes)
    out.check_accounted()
    return out
