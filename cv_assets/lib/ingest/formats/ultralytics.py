"""An Ultralytics dataset folder as a batch: ``data.yaml`` names the classes, and
``labels/[<split>/]<stem>.txt`` holds YOLO rows whose class ids index those names.

The ids are this dataset's, not the platform's: each is mapped through ``data.yaml``'s ``names``
to a name, and the name to the platform's class (``base.collect``), so a dataset whose classes
come in another order, or hold more classes, lands correctly. A segmentation line (``class x1 y1
x2 y2 ...``, three points or more) becomes the box around its polygon, counted and flagged.
Coordinates are normalised already: there is no declared size to compare with the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

import yaml

from cv_assets.lib.ingest.formats.base import (
    AnnotationFileError,
    AnnotationProblem,
    ParsedFile,
    RawAnnotation,
    RawImage,
)
from cv_assets.lib.ingest.landing import clip, display_name

DATA_YAML = "data.yaml"


def class_names(raw: bytes) -> dict[int, str]:
    """``names`` of a ``data.yaml`` (a list, or a mapping of id to name)."""
    try:
        doc = yaml.safe_load(raw.decode("utf-8-sig"))  # safe_load: no Python objects from YAML
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise AnnotationFileError(
            "bad_annotation_file", f"{DATA_YAML}: not valid YAML ({clip(str(e))})"
        ) from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return dict(enumerate(names))
    if isinstance(names, dict) and all(
        isinstance(k, int) and isinstance(v, str) for k, v in names.items()
    ):
        return dict(names)
    raise AnnotationFileError(
        "bad_annotation_file",
        f"{DATA_YAML}: 'names' must be a list of class names or a mapping of id to name",
    )


def parse_labels(path: str, raw: bytes, names: dict[int, str], image: str) -> ParsedFile:
    """One ``labels/.../<stem>.txt``: a box or polygon a line, for ``image`` (a file name)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AnnotationFileError("bad_annotation_file", f"{path}: not UTF-8 text") from None
    out = ParsedFile(images=[RawImage(image, 1.0, 1.0, normalised=True)])
    for n, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"line {n}"

        def refuse(rule: str, why: str, where: str = where, n: int = n) -> None:
            out.problems.append(AnnotationProblem(path, where, image, rule, f"{path}:{n}: {why}"))

        try:
            values = [float(t) for t in tokens]
        except ValueError:
            refuse("bad_box", f"{clip(display_name(line), 80)!r} is not a row of numbers")
            continue
        cls, coords = values[0], values[1:]
        if not (math.isfinite(cls) and cls == int(cls)) or int(cls) not in names:
            refuse("unknown_class_id", f"class id {tokens[0]!r} is not one of data.yaml's "
                   f"names (0..{max(names, default=-1)})")  # fmt: skip
            continue
        label = names[int(cls)]
        if len(coords) == 4:
            cx, cy, w, h = coords
            xyxy, shape = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), "box"
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            xyxy, shape = (min(xs), min(ys), max(xs), max(ys)), "polygon"
        else:
            refuse("wrong_columns", f"expected 5 columns (class cx cy w h) or a polygon "
                   f"(class x1 y1 x2 y2 x3 y3 ...), found {len(tokens)}")  # fmt: skip
            continue
        out.annotations.append(RawAnnotation(image, where, label, xyxy, shape))
    return out


def _images_by_stem(image_paths: Sequence[str]) -> dict[str, str]:
    return {PurePosixPath(p).stem: PurePosixPath(p).name for p in image_paths}


def parse_dataset(
    files: Sequence[tuple[str, int]],
    read: Callable[[str], bytes],
    max_bytes: int,
    image_paths: Sequence[str],
) -> Iterator[tuple[str, ParsedFile | AnnotationFileError]]:
    """``data.yaml`` first, then every label file against its names."""
    from cv_assets.lib.ingest.formats import read_one

    sizes = dict(files)
    if DATA_YAML not in sizes:
        missing = AnnotationFileError(
            "bad_annotation_file",
            f"no {DATA_YAML} at the batch root to name this Ultralytics dataset's class ids",
        )
        for path in sorted(sizes):
            yield path, missing
        return
    names: dict[int, str] = {}

    def read_names(path: str, raw: bytes) -> ParsedFile:
        names.update(class_names(raw))
        return ParsedFile()

    head = read_one(DATA_YAML, sizes[DATA_YAML], read, read_names, max_bytes)
    yield DATA_YAML, head
    stems = _images_by_stem(image_paths)
    for path in sorted(p for p in sizes if p != DATA_YAML):
        if isinstance(head, AnnotationFileError):
            yield (
                path,
                AnnotationFileError(
                    "bad_annotation_file", f"{path}: its class ids cannot be named ({head.reason})"
                ),
            )
            continue
        stem = PurePosixPath(path).stem
        image = stems.get(stem, f"{stem}.*")

        def parse(p: str, raw: bytes, image: str = image) -> ParsedFile:
            return parse_labels(p, raw, names, image)

        yield path, read_one(path, sizes[path], read, parse, max_bytes)
