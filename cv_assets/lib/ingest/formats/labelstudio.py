"""The Label Studio adapter: one JSON export (``annotations/*.json``) to raw images and boxes.

It owns reading Label Studio's export: a list of tasks, each with ``data.image`` and the
``annotations`` people made (``completions`` in exports older than 1.0). Model ``predictions``
are not labels and are never read.

- **The image's name is the basename of ``data.image``**, URL-decoded: ``/data/upload/1/
  3f2a1b9c-cat.jpg`` names ``3f2a1b9c-cat.jpg`` (Label Studio prefixes uploads with a hash), and
  a local-files URL ``/data/local-files/?d=frames/cat.jpg`` names ``cat.jpg``. The image must
  land in the batch as ``images/<that name>``.
- **One annotation per task: the newest that was not cancelled** (latest ``updated_at``, else
  ``created_at``, then the higher id, then the later in the list). A task's other annotations
  are drafts or other annotators' versions of the same objects, not extra objects, so they are
  not read. A task with no such annotation labels nothing (its image is unlabelled); one whose
  chosen annotation has an empty ``result`` declares an image with no objects.
- **Geometry.** ``rectanglelabels`` values are percent of the image. Label Studio rotates a
  rectangle clockwise (degrees) about its top-left corner ``(x, y)``, and the rotation is
  applied to the image's **pixels**: percent is converted with ``original_width`` and
  ``original_height`` first, then the corners are rotated, and the axis-aligned box around
  them is handed on (``shape`` "rotated"). Rotating in percent space, the known trap, shears the
  box on any non-square image. ``polygonlabels`` points become the box around them (``shape``
  "polygon"). A result without ``original_width``/``original_height`` leaves its image without
  a size, and ``base`` refuses its boxes (``image_size_unknown``).
- Results that are not objects are not annotations: a ``relation``, and a per-region attribute
  (a ``choices`` or ``textarea`` result sharing its id with a region of the same annotation).

Rules this module emits (per result, into ``ParsedFile.problems``): ``unsupported_shape``
(``choices``, ``keypointlabels``, ``brushlabels``... and a rotated *image*), ``bad_label``
(no single category name), ``bad_box`` (a coordinate that is not a number), ``duplicate_id`` (a
task id seen before), ``labelled_twice`` (a second task for the same image), ``no_image`` (a
task without ``data.image``) and ``bad_annotation`` (a task or result that is not an object).
A file that is not a Label Studio export raises ``AnnotationFileError("bad_annotation_file")``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cv_assets.lib.ingest.formats.base import (
    AnnotationProblem,
    ParsedFile,
    RawAnnotation,
    RawImage,
    load_json,
)
from cv_assets.lib.ingest.landing import clip, display_name

# The result types that are objects with a box: everything else is ``unsupported_shape``.
SHAPES = ("rectanglelabels", "polygonlabels")
# Results that describe a region or link two, never an object of their own.
NOT_OBJECTS = {"relation"}
# Results that label the whole image: counted (``image_level_label``), and no object unboxed.
IMAGE_LEVEL = {"choices", "textarea", "rating", "taxonomy", "number", "datetime"}


def parse(path: str, raw: bytes) -> ParsedFile:
    """Read one Label Studio JSON export; see the module docstring for the rules."""
    tasks = _load(path, raw)
    out = ParsedFile()
    task_ids: set[Any] = set()
    owners: dict[str, str] = {}  # image name -> the task that labels it
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            reason = f"{path}: task #{i}: is a {type(task).__name__}, not an object"
            out.problems.append(AnnotationProblem(path, f"task #{i}", "", "bad_annotation", reason))
            continue
        _task(path, i, task, task_ids, owners, out)
    return out


def _load(path: str, raw: bytes) -> list[Any]:
    return load_json(path, raw, list, "a Label Studio JSON export is a list of tasks")


def _task(
    path: str,
    index: int,
    task: dict[str, Any],
    ids: set[Any],
    owners: dict[str, str],
    out: ParsedFile,
) -> None:
    task_id = _id(task.get("id"))
    where = f"task #{index}" if task_id is None else f"task {task_id}"
    name = _image_name(task.get("data"))
    versions = task.get("annotations", task.get("completions"))
    if versions is not None and not isinstance(versions, list):
        reason = f"{path}: {where}: annotations is a {type(versions).__name__}, not a list"
        out.problems.append(AnnotationProblem(path, where, name, "bad_annotation", reason))
        return
    chosen = _newest(versions or [])
    results: Any = (chosen.get("result") or []) if chosen is not None else []
    if not isinstance(results, list):
        results = [results]  # reported below as a result that is not an object
    regions = {_id(r.get("id")) for r in results if _kind(r) in SHAPES}
    regions.discard(None)
    objects = [(j, r) for j, r in enumerate(results) if not _attribute(r, regions)]

    def refuse_all(rule: str, reason: str) -> None:
        for j, result in objects:
            w = _result_where(where, j, result)
            out.problems.append(AnnotationProblem(path, w, name, rule, f"{path}: {w}: {reason}"))

    if task_id is not None and task_id in ids:
        refuse_all("duplicate_id", f"task id {task_id!r} is used by an earlier task, which is kept")
        return
    ids.add(task_id)
    if chosen is None:
        return  # nothing labelled (no annotation, or every one cancelled): an unlabelled image
    if not name:
        refuse_all("no_image", "the task has no data.image, so no image to place it on")
        return
    if name in owners:
        refuse_all("labelled_twice", f"image {_shown(name)} is already labelled by "
                   f"{owners[name]} of this file, which wins")  # fmt: skip
        return
    owners[name] = where
    size = _image_size(results)
    out.images.append(RawImage(name, *size))
    for j, result in objects:
        _result(path, _result_where(where, j, result), result, name, size, out)


def _attribute(result: Any, regions: set[Any]) -> bool:
    """A result that is no object: a relation, or an attribute sharing a region's id."""
    if not isinstance(result, dict):
        return False
    kind = _kind(result)
    return kind in NOT_OBJECTS or (kind not in SHAPES and _id(result.get("id")) in regions)


def _kind(result: Any) -> str | None:
    kind = result.get("type") if isinstance(result, dict) else None
    return kind if isinstance(kind, str) else None


def _id(value: Any) -> int | str | None:
    """An id usable as a key: an int or a string (JSON true is not an id)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    return value


def _newest(annotations: list[Any]) -> dict[str, Any] | None:
    """The newest annotation that was not cancelled, or None."""
    live = [
        (i, a)
        for i, a in enumerate(annotations)
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not live:
        return None

    def age(item: tuple[int, dict[str, Any]]) -> tuple[float, float, int]:
        i, a = item
        stamp = _timestamp(a.get("updated_at")) or _timestamp(a.get("created_at"))
        ann_id = a.get("id")
        number = ann_id if isinstance(ann_id, int) and not isinstance(ann_id, bool) else -math.inf
        return (stamp if stamp is not None else -math.inf, number, i)

    return max(live, key=age)[1]


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Label Studio writes UTC; a naive stamp is read as UTC so stamps always compare.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _image_name(data: Any) -> str:
    """The basename ``data.image`` names (URL-decoded; a local-files ``?d=`` path's own)."""
    ref = data.get("image") if isinstance(data, dict) else None
    if not isinstance(ref, str) or not ref:
        return ""
    try:
        parts = urlsplit(ref)
        target = parse_qs(parts.query).get("d", [None])[0] or unquote(parts.path)
    except ValueError:  # not a URL after all (an unbalanced "[" reads as a bad IPv6 host)
        target = ref
    return PurePosixPath(target.replace("\\", "/")).name


def _image_size(results: list[Any]) -> tuple[float | None, float | None]:
    """The first positive original_width/original_height any result of the task gives."""
    for r in results:
        if isinstance(r, dict):
            w, h = _number(r.get("original_width")), _number(r.get("original_height"))
            if w and h and w > 0 and h > 0:
                return (w, h)
    return (None, None)


def _result_where(task_where: str, j: int, result: Any) -> str:
    rid = _id(result.get("id")) if isinstance(result, dict) else None
    return f"{task_where} result #{j}" if rid is None else f"{task_where} result {rid}"


def _result(
    path: str,
    where: str,
    result: Any,
    image: str,
    size: tuple[float | None, float | None],
    out: ParsedFile,
) -> None:
    def refuse(rule: str, reason: str) -> None:
        text = f"{path}: {where} of {clip(display_name(image))}: {reason}"
        out.problems.append(AnnotationProblem(path, where, image, rule, text))

    if not isinstance(result, dict):
        refuse("bad_annotation", f"is a {type(result).__name__}, not an object")
        return
    kind = _kind(result)
    if result.get("type") in IMAGE_LEVEL:
        refuse("image_level_label", f"result type {_shown(result.get('type'))} labels the whole "
               "image, not a region: not a box")  # fmt: skip
        return
    if kind not in SHAPES:
        shown = _shown(result.get("type"))
        refuse("unsupported_shape", f"result type {shown} is not a box or polygon "
               f"(supported: {', '.join(SHAPES)})")  # fmt: skip
        return
    value = result.get("value")
    if not isinstance(value, dict):
        refuse("bad_box", "has no value object")
        return
    labels = value.get(kind)
    if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
        refuse("bad_label", f"{kind} {_shown(labels)} is not exactly one category name")
        return
    turned = _number(result.get("image_rotation")) or 0.0
    if turned % 360:
        refuse("unsupported_shape", f"the image was rotated {turned:g} degrees in Label Studio, "
               "so the coordinates are not the stored image's")  # fmt: skip
        return
    own = _number(result.get("original_width")), _number(result.get("original_height"))
    width, height = own if own[0] and own[1] and own[0] > 0 and own[1] > 0 else size
    if width is None or height is None:
        # base refuses it for the image's unknown size before looking at the box.
        out.annotations.append(RawAnnotation(image, where, labels[0], (0.0, 0.0, 0.0, 0.0)))
        return
    box = (_rectangle if kind == "rectanglelabels" else _polygon)(value, width, height)
    if isinstance(box, str):
        refuse("bad_box", box)
        return
    xyxy, shape = box
    out.annotations.append(RawAnnotation(image, where, labels[0], xyxy, shape))


Box = tuple[tuple[float, float, float, float], str]


def _rectangle(value: Mapping[str, Any], width: float, height: float) -> Box | str:
    """A (possibly rotated) rectangle in percent -> its axis-aligned box in pixels."""
    x, y, w, h = (_number(value.get(k)) for k in ("x", "y", "width", "height"))
    rotation = _number(value.get("rotation", 0))
    if x is None or y is None or w is None or h is None or rotation is None:
        fields = {k: value.get(k) for k in ("x", "y", "width", "height", "rotation")}
        return f"rectangle {_shown(fields)} holds a value that is not a number"
    if not math.isfinite(rotation):
        return f"rotation {rotation:g} is not a finite angle"
    # Pixels first: a rotation is a rigid motion of the image's pixels, not of percent space.
    x0, y0, pw, ph = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    if rotation % 360 == 0:
        return (x0, y0, x0 + pw, y0 + ph), "box"
    t = math.radians(rotation)
    cos, sin = math.cos(t), math.sin(t)
    # Clockwise on screen is counter-clockwise in maths, as y grows downwards: the usual
    # rotation matrix applied in (x right, y down) coordinates turns clockwise as seen.
    xs: list[float] = []
    ys: list[float] = []
    for dx, dy in ((0.0, 0.0), (pw, 0.0), (pw, ph), (0.0, ph)):
        xs.append(x0 + dx * cos - dy * sin)
        ys.append(y0 + dx * sin + dy * cos)
    return (min(xs), min(ys), max(xs), max(ys)), "rotated"


def _polygon(value: Mapping[str, Any], width: float, height: float) -> Box | str:
    """Polygon points in percent -> the axis-aligned box around them in pixels."""
    points = value.get("points")
    if not isinstance(points, list) or len(points) < 3:
        return f"points {_shown(points)} is not a polygon of three or more [x, y] points"
    xs: list[float] = []
    ys: list[float] = []
    for p in points:
        px, py = (
            (_number(p[0]), _number(p[1])) if isinstance(p, list) and len(p) == 2 else (None, None)
        )
        if px is None or py is None:
            return f"point {_shown(p)} is not an [x, y] pair of numbers"
        xs.append(px * width / 100)
        ys.append(py * height / 100)
    return (min(xs), min(ys), max(xs), max(ys)), "polygon"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _shown(value: Any) -> str:
    """A value from the file as a reason quotes it: strings quoted, everything clipped."""
    if isinstance(value, str):
        return repr(clip(display_name(value), 80))
    return clip(json.dumps(value, default=str), 80)
