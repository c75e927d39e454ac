"""CVAT for images 1.1 XML (``annotations/*.xml``): the ``cvat`` adapter.

One file holds a task's (or project's) images: ``<annotations><image id name width height>``,
each with its shapes as children. Land this export, not CVAT's YOLO export: that one writes an
empty label file for every polygon and rotated box, so those objects silently become
background. Here every child of an ``<image>`` is one annotation, and each ends up a box or a
problem:

- ``<box xtl ytl xbr ybr>``: the box as written (continuous pixel coordinates). With
  ``rotation`` (degrees, clockwise, about the box's centre; CVAT writes it only when non-zero)
  it becomes the axis-aligned box around the rotated corners, shape ``rotated``;
- ``<polygon points="x1,y1;x2,y2;...">``: the box around its points, shape ``polygon``;
- ``<ellipse cx cy rx ry [rotation]>``: the box around the (rotated) ellipse, shape
  ``ellipse``;
- ``<polyline>``, ``<points>``, ``<mask>``, ``<cuboid>``, ``<skeleton>``, ``<tag>`` and any
  other child: ``unsupported_shape``. A tag labels the whole image, not a region, but it is
  counted all the same, so nothing in the file is dropped unseen.

A shape without a ``label`` is ``bad_annotation``; a missing or non-numeric coordinate, or a
polygon of fewer than three points, is ``bad_box``. A second ``<image>`` with a name already
seen (a project export whose tasks reuse frame names) keeps the first: the second's shapes are
``labelled_twice``. Whole-file refusals: malformed XML, a DTD or entity (``unsafe_xml``), a root
other than ``<annotations>``, a ``<track>`` (that is CVAT *for video*), an ``<image>`` without a
name, or a width or height that is not a number. A missing width or height is left to
``collect`` (``image_size_unknown`` for each of that image's shapes). The class, geometry and
batch rules are ``base.collect``'s.
"""

from __future__ import annotations

import math
from xml.etree.ElementTree import Element  # the type only; parsing is safe_xml's

from cv_assets.lib.ingest.formats.base import (
    AnnotationFileError,
    AnnotationProblem,
    ParsedFile,
    RawAnnotation,
    RawImage,
)
from cv_assets.lib.ingest.formats.safe_xml import number, parse_root, shown

XYXY = tuple[float, float, float, float]

# Shapes CVAT writes that have no box this adapter should invent, and why.
_UNSUPPORTED = {
    "polyline": "a polyline is an open line, not a region",
    "points": "points mark positions, not a region",
    "mask": "masks are not decoded; export boxes or polygons",
    "cuboid": "a cuboid is a 3-D shape; its 2-D box is not defined by CVAT",
    "skeleton": "a skeleton is a set of keypoints, not a region",
    "tag": "a tag labels the whole image, not a region",
}


def parse(path: str, raw: bytes) -> ParsedFile:
    """Read one CVAT for images 1.1 file: its images, and a box (or a problem) per shape."""
    doc = parse_root(path, raw, "annotations")
    tracks = doc.findall("track")
    if tracks:
        raise AnnotationFileError(
            "bad_annotation_file",
            f"{path}: holds {len(tracks)} <track> element(s), so it is CVAT for video 1.1; "
            "export the task as CVAT for images 1.1",
        )
    out = ParsedFile()
    first_id: dict[str, str] = {}  # image name -> the id of the <image> that labels it
    for n, img in enumerate(doc.findall("image"), 1):
        ident = img.get("id", "?")
        name = img.get("name")
        if not name:
            raise AnnotationFileError(
                "bad_annotation_file", f"{path}: <image> {n} (id {shown(ident)}) has no name"
            )
        width = _dimension(path, img, "width", name)
        height = _dimension(path, img, "height", name)
        earlier = first_id.get(name)
        if earlier is None:
            first_id[name] = ident
            out.images.append(RawImage(name, width, height))
        counts: dict[str, int] = {}
        for shape in img:
            counts[shape.tag] = counts.get(shape.tag, 0) + 1
            where = f"{shown(shape.tag, 40)} {counts[shape.tag]}"
            if earlier is not None:
                reason = (
                    f"{path}: {where} of image {shown(name)} (id {shown(ident)}): the file "
                    f"names this image again; its <image> id {shown(earlier)} labels it"
                )
                out.problems.append(AnnotationProblem(path, where, name, "labelled_twice", reason))
            else:
                _read(out, path, name, shape, where)
    return out


def _dimension(path: str, img: Element, attr: str, name: str) -> float | None:
    text = img.get(attr)
    value = number(text)
    if text is not None and value is None:
        raise AnnotationFileError(
            "bad_annotation_file",
            f"{path}: image {shown(name)}: {attr} {shown(text)!r} is not a number",
        )
    return value


def _read(out: ParsedFile, path: str, image: str, shape: Element, where: str) -> None:
    """One shape: a RawAnnotation with its axis-aligned box, or a problem saying why not."""

    def refuse(rule: str, what: str) -> None:
        reason = f"{path}: {where} of image {shown(image)}: {what}"
        out.problems.append(AnnotationProblem(path, where, image, rule, reason))

    kind = shape.tag
    if kind == "tag":  # counted, and no object left unboxed (base.COMPLETE_DESPITE)
        refuse("image_level_label", f"<tag> {shown(shape.get('label') or '', 80)!r} labels "
               "the whole image, not a region: not a box")  # fmt: skip
        return
    if kind not in ("box", "polygon", "ellipse"):
        why = _UNSUPPORTED.get(kind, "CVAT for images 1.1 defines no such shape")
        refuse("unsupported_shape", f"<{shown(kind, 40)}> is not imported: {why}")
        return
    label = shape.get("label")
    if not label:
        refuse("bad_annotation", "has no label, so its class is unknown")
        return
    if kind == "polygon":
        got: tuple[XYXY, str] | str = _polygon(shape.get("points"))
    else:
        got = _box(shape) if kind == "box" else _ellipse(shape)
    if isinstance(got, str):
        refuse("bad_box", f"{shown(label)!r}: {got}")
        return
    xyxy, converted = got
    out.annotations.append(RawAnnotation(image, where, label, xyxy, shape=converted))


def _numbers(shape: Element, attrs: tuple[str, ...]) -> list[float] | str:
    """The named attributes as numbers, or what is wrong with the first that is not one."""
    values: list[float] = []
    for attr in attrs:
        text = shape.get(attr)
        value = number(text)
        if value is None:
            return (
                f"{attr} is missing" if text is None else f"{attr} {shown(text)!r} is not a number"
            )
        values.append(value)
    return values


def _rotation(shape: Element) -> float | str:
    text = shape.get("rotation")
    if text is None:
        return 0.0
    value = number(text)
    return f"rotation {shown(text)!r} is not a number" if value is None else value


def _box(shape: Element) -> tuple[XYXY, str] | str:
    got = _numbers(shape, ("xtl", "ytl", "xbr", "ybr"))
    rotation = _rotation(shape)
    if isinstance(got, str) or isinstance(rotation, str):
        return got if isinstance(got, str) else str(rotation)
    x1, y1, x2, y2 = got
    if math.fmod(rotation, 360.0) == 0.0:
        return (x1, y1, x2, y2), "box"
    if x2 <= x1 or y2 <= y1:
        # Rotating a box of negative size would hide it; leave it to collect to refuse.
        return (x1, y1, x2, y2), "rotated"
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # Image y points down, so this turns clockwise on screen, as CVAT does. The axis-aligned box
    # around the corners is the same either way, so the direction cannot skew it.
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = [(x - cx, y - cy) for x in (x1, x2) for y in (y1, y2)]
    xs = [cx + dx * c - dy * s for dx, dy in corners]
    ys = [cy + dx * s + dy * c for dx, dy in corners]
    return (min(xs), min(ys), max(xs), max(ys)), "rotated"


def _ellipse(shape: Element) -> tuple[XYXY, str] | str:
    got = _numbers(shape, ("cx", "cy", "rx", "ry"))
    rotation = _rotation(shape)
    if isinstance(got, str) or isinstance(rotation, str):
        return got if isinstance(got, str) else str(rotation)
    cx, cy, rx, ry = got
    if rx <= 0 or ry <= 0:
        # Squaring would hide a negative radius; collect refuses the non-positive size.
        return (cx - rx, cy - ry, cx + rx, cy + ry), "ellipse"
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    # Half-extents of an ellipse rotated by theta: sqrt((rx cos)^2 + (ry sin)^2) across, etc.
    hw, hh = math.hypot(rx * c, ry * s), math.hypot(rx * s, ry * c)
    return (cx - hw, cy - hh, cx + hw, cy + hh), "ellipse"


def _polygon(points: str | None) -> tuple[XYXY, str] | str:
    if points is None:
        return "points is missing"
    xs: list[float] = []
    ys: list[float] = []
    for k, pair in enumerate(points.split(";"), 1):
        xy = pair.split(",")
        x, y = (number(xy[0]), number(xy[1])) if len(xy) == 2 else (None, None)
        if x is None or y is None:
            return f"point {k} {shown(pair, 40)!r} is not two numbers 'x,y'"
        xs.append(x)
        ys.append(y)
    if len(xs) < 3:
        return f"a polygon needs at least 3 points; it has {len(xs)}"
    return (min(xs), min(ys), max(xs), max(ys)), "polygon"
