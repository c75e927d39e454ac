"""Annotation-tool exports in, the standard sample out: one adapter per format of the landing
contract (v2), all under the rules of ``base.py``.

``yolo`` is the contract's own format (``labels/<stem>.txt``, class ids in the batch's class
order) and never comes through here: intake reads it as it always has. Every other format is
converted to boxes by name before intake validates them, so the label schema and the quarantine
stay the one gate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase

from cv_assets.lib.ingest.formats.base import (
    AnnotationFileError,
    Imported,
    ParsedFile,
    Parser,
    collect,
)
from cv_assets.lib.ingest.landing import FORMATS, LABELS, clip

__all__ = ["FORMATS", "LABELS", "import_batch", "is_annotation_file", "is_image_place"]

ADAPTER_VERSION = "1"
# Where each format's annotation files sit in a batch (paths relative to the batch folder).
ANNOTATION_GLOBS: dict[str, tuple[str, ...]] = {
    "yolo": ("labels/*.txt",),
    "ultralytics": ("data.yaml", "labels/*.txt", "labels/*/*.txt"),
    "coco": ("annotations/*.json",),
    "voc": ("annotations/*.xml",),
    "cvat": ("annotations/*.xml",),
    "labelstudio": ("annotations/*.json",),
}
# Where images sit: flat under images/, or one folder per split for an Ultralytics dataset.
IMAGE_GLOBS: dict[str, tuple[str, ...]] = {
    "ultralytics": ("images/*", "images/*/*"),
}
DEFAULT_IMAGE_GLOBS = ("images/*",)


def _matches(path: str, globs: Sequence[str]) -> bool:
    # fnmatch's * also crosses "/", so the depth is checked apart: images/* is not images/a/b.
    depth = path.count("/")
    return any(depth == g.count("/") and fnmatchcase(path, g) for g in globs)


def is_annotation_file(fmt: str, path: str) -> bool:
    return _matches(path, ANNOTATION_GLOBS[fmt])


def is_image_place(fmt: str, path: str) -> bool:
    return _matches(path, IMAGE_GLOBS.get(fmt, DEFAULT_IMAGE_GLOBS))


def _parsers() -> dict[str, Callable[..., ParsedFile]]:
    from cv_assets.lib.ingest.formats import coco, cvat, labelstudio, voc

    return {
        "coco": coco.parse,
        "voc": voc.parse,
        "cvat": cvat.parse,
        "labelstudio": labelstudio.parse,
    }


def import_batch(
    fmt: str,
    files: Sequence[tuple[str, int]],
    read: Callable[[str], bytes],
    image_paths: Iterable[str],
    classes: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    max_bytes: int = 64 * 2**20,
) -> Imported:
    """Convert a batch's annotation files (``(path, size)``) of format ``fmt``.

    A file over ``max_bytes`` is refused unread (``annotation_too_large``); a parser's surprise is
    that file's problem (``bad_annotation_file``), never the batch's.
    """
    adapter = f"cv_assets.{fmt}/{ADAPTER_VERSION}"
    if fmt == "ultralytics":
        from cv_assets.lib.ingest.formats import ultralytics

        paths = list(image_paths)
        parsed = ultralytics.parse_dataset(files, read, max_bytes, paths)
        return collect(fmt, adapter, parsed, paths, classes, aliases)
    parser: Parser = _parsers()[fmt]
    results: list[tuple[str, ParsedFile | AnnotationFileError]] = []
    for path, size in sorted(files):
        results.append((path, read_one(path, size, read, parser, max_bytes)))
    return collect(fmt, adapter, results, image_paths, classes, aliases)


def read_one(
    path: str, size: int, read: Callable[[str], bytes], parser: Parser, max_bytes: int
) -> ParsedFile | AnnotationFileError:
    """One file through its parser, or why it was refused (size first, before reading)."""
    too_large = AnnotationFileError(
        "annotation_too_large",
        f"{path}: {size:,} bytes exceeds the annotation file limit of {max_bytes:,} "
        "(max_annotation_bytes); not parsed",
    )
    if size > max_bytes:
        return too_large
    raw = read(path)
    if len(raw) > max_bytes:
        return too_large
    try:
        return parser(path, raw)
    except AnnotationFileError as e:
        return e
    except Exception as e:  # parsing is total by design; a surprise is still this file's
        return AnnotationFileError(
            "bad_annotation_file", f"{path}: cannot be parsed ({type(e).__name__}: {clip(str(e))})"
        )
