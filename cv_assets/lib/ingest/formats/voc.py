"""Pascal VOC XML, one file per image (``annotations/<stem>.xml``): the ``voc`` adapter.

It reads ``<annotation>`` with its ``<filename>``, ``<size><width><height>`` and each
``<object>``: ``<name>``, ``<bndbox><xmin><ymin><xmax><ymax>``. The rules (class by name, boxes
inside the image, the image in the batch) are ``base.collect``'s; this module only parses.

Coordinates are **continuous pixel coordinates, xyxy as written**: a box from ``xmin`` to
``xmax`` spans ``xmax - xmin`` pixels. The original VOC devkit counted 1-based inclusive pixels
(``xmax - xmin + 1`` wide), but the tools teams export from today (CVAT, LabelImg, Roboflow)
write continuous coordinates, often as decimals, and read them back the same way, so a round
trip through them stays exact. Read continuously, a devkit-era file loses one pixel at each
box's left and top edge (its right and bottom edges land exactly), and a box drawn to the edge
(``xmax`` = width) still fits; reading modern files the devkit's way would shift every box.

- ``<difficult>``, ``<truncated>`` and ``<occluded>`` are annotators' notes, not shapes: a
  difficult object stays an ordinary box. VOC's own evaluation ignores it, but it is a real
  object: dropping it would teach a model that the region is background. VOC has no crowd
  regions.
- ``<part>`` boxes inside an ``<object>`` (VOC's person layout: head, hand, foot) are read as
  annotations of their own, named by their ``<name>``: the class list decides, so a platform
  without a ``hand`` class quarantines them as ``unknown_class`` instead of dropping them.
- A missing or empty ``<filename>``, a ``<size>`` value that is not a number, malformed XML, a
  DTD or entity, or a root other than ``<annotation>`` refuse the whole file
  (``bad_annotation_file``, ``unsafe_xml``). A missing ``<size>`` is left to ``collect``
  (``image_size_unknown`` for each box), since a file with no objects needs no size.
- Per object: a missing ``<name>`` is ``bad_annotation``; a missing ``<bndbox>`` or a missing or
  non-numeric coordinate is ``bad_box``.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element  # the type only; parsing is safe_xml's

from cv_assets.lib.ingest.formats.base import (
    AnnotationFileError,
    AnnotationProblem,
    ParsedFile,
    RawAnnotation,
    RawImage,
)
from cv_assets.lib.ingest.formats.safe_xml import child_text, number, parse_root, shown

_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def parse(path: str, raw: bytes) -> ParsedFile:
    """Read one VOC annotation file: its image, and a box (or a problem) per object and part."""
    doc = parse_root(path, raw, "annotation")
    filename = child_text(doc, "filename")
    if not filename:
        raise AnnotationFileError(
            "bad_annotation_file",
            f"{path}: <annotation> has no <filename>, so the image it labels is unknown",
        )
    width, height = _size(path, doc)
    out = ParsedFile(images=[RawImage(filename, width, height)])
    for n, obj in enumerate(doc.findall("object"), 1):
        _read(out, path, filename, obj, f"object {n}")
        for k, part in enumerate(obj.findall("part"), 1):
            _read(out, path, filename, part, f"object {n} part {k}")
    return out


def _size(path: str, doc: Element) -> tuple[float | None, float | None]:
    size = doc.find("size")
    if size is None:
        return None, None
    dims: list[float | None] = []
    for tag in ("width", "height"):
        text = child_text(size, tag)
        value = number(text)
        if text is not None and value is None:
            raise AnnotationFileError(
                "bad_annotation_file",
                f"{path}: <size><{tag}> {shown(text)!r} is not a number",
            )
        dims.append(value)
    return dims[0], dims[1]


def _read(out: ParsedFile, path: str, image: str, obj: Element, where: str) -> None:
    """One ``<object>`` (or ``<part>``): a RawAnnotation, or a problem saying what is missing."""

    def refuse(rule: str, what: str) -> None:
        reason = f"{path}: {where} of image {shown(image)}: {what}"
        out.problems.append(AnnotationProblem(path, where, image, rule, reason))

    name = child_text(obj, "name")
    if not name:
        refuse("bad_annotation", "has no <name>, so its class is unknown")
        return
    box = obj.find("bndbox")
    if box is None:
        refuse("bad_box", f"{shown(name)!r} has no <bndbox>")
        return
    xyxy: list[float] = []
    for tag in _CORNERS:
        text = child_text(box, tag)
        value = number(text)
        if value is None:
            got = "is missing" if not text else f"{shown(text)!r} is not a number"
            refuse("bad_box", f"{shown(name)!r}: <bndbox><{tag}> {got}")
            return
        xyxy.append(value)
    out.annotations.append(RawAnnotation(image, where, name, (xyxy[0], xyxy[1], xyxy[2], xyxy[3])))
