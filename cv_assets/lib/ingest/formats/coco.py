"""The COCO adapter: one instances JSON file (``annotations/*.json``) to raw images and boxes.

It owns reading COCO's three tables (``images``, ``annotations``, ``categories``) and joining
them by id in one pass of dict lookups. It hands ``base.collect`` each annotation's category
**name**, never its id, so the id conventions tools disagree on change nothing: Ultralytics'
``convert_coco`` remaps 91 ids to 80 by default (``cls91to80``), Roboflow prepends a root
category (id 0) that owns no annotation, and exports start at 0 or 1. A category is only ever
looked up by the id an annotation names.

Geometry: ``bbox`` is ``[x, y, width, height]`` in pixels, taken as it is (``shape`` "box"); a
negative or zero size, or a box outside its image, reaches ``base`` as written and is refused
there. An annotation without a usable ``bbox`` but with polygon ``segmentation`` gets the
polygon's bounding box (``shape`` "polygon", counted as converted). RLE masks are not decoded:
without a ``bbox`` such an annotation is refused (``bad_box``), unless it is a crowd region,
which never becomes a box. ``iscrowd: 1`` regions are handed on as crowd (excluded, counted).

Rules this module emits (per annotation, into ``ParsedFile.problems``): ``duplicate_id`` (a
second annotation with an id already seen, which loses to the first; or one whose image or
category id is declared twice with different contents, so which is meant is a guess),
``unknown_image_id`` (no image has that id, or it has no ``file_name``),
``unknown_category_id`` (no category has that id, or it has no name), ``bad_annotation`` (an
entry that is not an object) and ``bad_box`` (no usable bbox or polygon). A file that is not
COCO at all raises ``AnnotationFileError("bad_annotation_file")``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from cv_assets.lib.ingest.formats.base import (
    AnnotationFileError,
    AnnotationProblem,
    ParsedFile,
    RawAnnotation,
    RawImage,
    load_json,
)
from cv_assets.lib.ingest.landing import clip, display_name

# An image or category id no annotation may use: (rule, reason), quoted per annotation.
_Unusable = tuple[str, str]


def parse(path: str, raw: bytes) -> ParsedFile:
    """Read one COCO instances file; see the module docstring for the rules."""
    doc = _load(path, raw)
    images, image_bad, out = _images(path, _table(path, doc, "images", required=True))
    categories, category_bad = _categories(_table(path, doc, "categories", required=False))
    seen: set[Any] = set()
    for i, ann in enumerate(_table(path, doc, "annotations", required=False)):
        _annotation(path, i, ann, images, image_bad, categories, category_bad, seen, out)
    return out


def _load(path: str, raw: bytes) -> dict[str, Any]:
    what = "a COCO file is a JSON object with images, annotations and categories"
    return load_json(path, raw, dict, what)


def _table(path: str, doc: Mapping[str, Any], key: str, required: bool) -> list[Any]:
    value = doc.get(key)
    if value is None and not required:
        return []  # an image-info file (no annotations) or one with nothing labelled
    if not isinstance(value, list):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise AnnotationFileError(
            "bad_annotation_file", f"{path}: COCO's {key!r} must be a list; it is {got}"
        )
    return value


def _id(value: Any) -> int | str | None:
    """An id usable as a key: an int or a string (JSON true is not an id)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _images(path: str, table: list[Any]) -> tuple[dict[Any, str], dict[Any, _Unusable], ParsedFile]:
    """Image id -> file name; ids no annotation may use, with why; the declared images."""
    by_id: dict[Any, str] = {}
    sizes: dict[Any, tuple[float | None, float | None]] = {}
    bad: dict[Any, _Unusable] = {}
    out = ParsedFile()
    declared: set[str] = set()
    for entry in table:
        if not isinstance(entry, dict):
            continue  # nothing can name it; an annotation naming its id is unknown_image_id
        image_id = _id(entry.get("id"))
        name = entry.get("file_name")
        if image_id is None:
            continue
        if not isinstance(name, str) or not name:
            reason = f"image id {image_id!r} has no file_name"
            bad.setdefault(image_id, ("unknown_image_id", reason))
            continue
        size = (_number(entry.get("width")), _number(entry.get("height")))
        if image_id in by_id:
            if (by_id[image_id], sizes[image_id]) != (name, size):
                # Two different images under one id: which one an annotation means is a guess.
                bad[image_id] = (
                    "duplicate_id",
                    f"image id {image_id!r} is declared twice ({_shown(by_id[image_id])} and "
                    f"{_shown(name)}), so which image it labels is ambiguous",
                )
            continue
        by_id[image_id] = name
        sizes[image_id] = size
        if name not in declared:
            declared.add(name)
            out.images.append(RawImage(name, *size))
    return by_id, bad, out


def _categories(table: list[Any]) -> tuple[dict[Any, str], dict[Any, _Unusable]]:
    """Category id -> name, and ids whose name is missing or contradictory."""
    names: dict[Any, str] = {}
    bad: dict[Any, _Unusable] = {}
    for entry in table:
        if not isinstance(entry, dict):
            continue
        cat_id = _id(entry.get("id"))
        name = entry.get("name")
        if cat_id is None:
            continue
        if not isinstance(name, str) or not name:
            bad.setdefault(cat_id, ("unknown_category_id", f"category id {cat_id!r} has no name"))
        elif names.setdefault(cat_id, name) != name:
            bad[cat_id] = (
                "duplicate_id",
                f"category id {cat_id!r} is declared twice ({_shown(names[cat_id])} and "
                f"{_shown(name)}), so its class is ambiguous",
            )
    return names, bad


def _annotation(
    path: str,
    index: int,
    ann: Any,
    images: Mapping[Any, str],
    image_bad: Mapping[Any, _Unusable],
    categories: Mapping[Any, str],
    category_bad: Mapping[Any, _Unusable],
    seen: set[Any],
    out: ParsedFile,
) -> None:
    if not isinstance(ann, dict):
        kind = type(ann).__name__
        _refuse(out, path, f"annotation #{index}", "", ("bad_annotation", f"is a {kind}"))
        return
    ann_id = _id(ann.get("id"))
    # Without a usable id, its position in the list still lets a person find it.
    where = f"annotation #{index}" if ann_id is None else f"annotation id {ann_id}"
    image_id = _id(ann.get("image_id"))
    image = images.get(image_id, "")
    if ann_id is not None and ann_id in seen:
        reason = f"id {ann_id!r} is used by an earlier annotation in the file, which is kept"
        _refuse(out, path, where, image, ("duplicate_id", reason))
        return
    seen.add(ann_id)
    if image_id in image_bad:
        _refuse(out, path, where, image, image_bad[image_id])
        return
    if not image:
        reason = f"image_id {_shown(ann.get('image_id'))} is not the id of any image in the file"
        _refuse(out, path, where, "", ("unknown_image_id", reason))
        return
    cat_id = _id(ann.get("category_id"))
    label = categories.get(cat_id)
    if label is None:
        reason = (
            f"category_id {_shown(ann.get('category_id'))} is not the id of any category in "
            f"the file ({len(categories)} declared)"
        )
        _refuse(out, path, where, image, category_bad.get(cat_id, ("unknown_category_id", reason)))
        return
    flag = ann.get("iscrowd")
    crowd = flag is True or (_number(flag) or 0.0) != 0.0
    box = _bbox(ann.get("bbox"))
    shape = "box"
    if isinstance(box, str):
        polygon = _polygon_box(ann.get("segmentation"))
        if polygon is not None:
            box, shape = polygon, "polygon"
        elif crowd:
            box = (0.0, 0.0, 0.0, 0.0)  # a crowd region is counted, never placed
        else:
            reason = f"{box}, and no polygon segmentation to box (RLE masks are not decoded)"
            _refuse(out, path, where, image, ("bad_box", reason))
            return
    out.annotations.append(RawAnnotation(image, where, label, box, shape, crowd))


def _bbox(value: Any) -> tuple[float, float, float, float] | str:
    """COCO's [x, y, w, h] as (x1, y1, x2, y2), or what is wrong with it."""
    if value is None or value == []:
        return "it has no bbox"
    if not isinstance(value, list) or len(value) != 4:
        return f"bbox {_shown(value)} is not [x, y, width, height]"
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return f"bbox {_shown(value)} holds a value that is not a number"
    x, y, w, h = (n for n in numbers if n is not None)
    # Sizes are kept as written, negative ones included: base refuses them with the size.
    return (x, y, x + w, y + h)


def _polygon_box(segmentation: Any) -> tuple[float, float, float, float] | None:
    """The box around COCO polygons ``[[x1, y1, x2, y2, ...], ...]``; None for RLE or junk."""
    if not isinstance(segmentation, list) or not segmentation:
        return None
    xs: list[float] = []
    ys: list[float] = []
    for poly in segmentation:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return None  # fewer than three points is no polygon
        coords = [_number(v) for v in poly]
        if any(c is None or not math.isfinite(c) for c in coords):
            return None
        xs.extend(c for c in coords[0::2] if c is not None)
        ys.extend(c for c in coords[1::2] if c is not None)
    return (min(xs), min(ys), max(xs), max(ys))


def _shown(value: Any) -> str:
    """A value from the file as a reason quotes it: strings quoted, everything clipped."""
    if isinstance(value, str):
        return repr(clip(display_name(value), 80))
    return clip(json.dumps(value, default=str), 80)


def _refuse(out: ParsedFile, path: str, where: str, image: str, why: tuple[str, str]) -> None:
    rule, reason = why
    of = f" of {clip(display_name(image))}" if image else ""
    text = f"{path}: {where}{of}: {reason}"
    out.problems.append(AnnotationProblem(path, where, image, rule, text))
