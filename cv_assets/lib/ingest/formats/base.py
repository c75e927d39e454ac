"""What every annotation-format adapter hands intake, and the rules applied to it in one place.

An adapter only *parses*: it reads one annotation file and returns the images the file declares
and, for each annotation, the image it belongs to, its category **name** and its box in the
image's pixels. Everything a rule decides happens here, the same way for every format:

- a category name maps to the platform's class list **by name** (never by index), through
  ``CV_ASSETS_CLASS_ALIASES``; an unknown name quarantines that annotation, naming the file, the
  annotation and the name. Categories that own no annotation never matter, so 0- or 1-based ids,
  or a root category that owns nothing (Roboflow), change nothing;
- polygons and rotated boxes arrive as the axis-aligned box around them, counted and flagged;
- ``iscrowd`` regions are excluded and counted apart: never an object, never a training box;
- a box with a negative or zero size, or outside the image it names, is quarantined;
- an annotation naming an image the batch lacks is quarantined (``image_not_in_batch``);
- for every image, annotations in = boxes out + quarantined + crowd, asserted.

A file that cannot be parsed at all (bad JSON or XML, the wrong schema, an XML entity bomb, over
the size limit) raises ``AnnotationFileError``: intake quarantines the file and carries on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cv_assets.lib.ingest.landing import clip, display_name

# Label provenance: where an accepted label came from. The test and validation splits hold only
# labels a person made or checked: HUMAN, IMPORT (an annotation tool's export) and REVIEW;
# labels a model proposed (``model:<version>``) are training-only until a person reviews them.
HUMAN = "human"
REVIEW = "review"
IMPORT_PREFIX = "import:"
MODEL_PREFIX = "model:"


def human_verified(label_source: str) -> bool:
    return not label_source.startswith(MODEL_PREFIX)


# An annotation refused under one of these leaves its image's labels complete *for this
# platform*: an object of a class it does not detect is background to it, a label of the whole
# image (a CVAT tag, a Label Studio choice) is no object, and a second labelling of an image leaves
# the first as it was. Any other refusal means an object of the image has no box: trained on as
# it is, the image would teach that the object is background, so it goes to the unlabelled pool
# instead (``ImageLabels.incomplete``).
COMPLETE_DESPITE = frozenset({"unknown_class", "image_level_label", "labelled_twice"})


class AnnotationFileError(ValueError):
    """The whole annotation file is unusable; ``rule`` names why (``bad_annotation_file`` ...)."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def load_json(path: str, raw: bytes, shape: type, what: str) -> Any:
    """A JSON annotation file whose top level must be ``shape`` (``dict`` or ``list``)."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise AnnotationFileError(
            "bad_annotation_file", f"{path}: not valid JSON ({clip(str(e))})"
        ) from None
    if not isinstance(doc, shape):
        raise AnnotationFileError(
            "bad_annotation_file", f"{path}: {what}; this one is a {type(doc).__name__}"
        )
    return doc


@dataclass(frozen=True)
class RawImage:
    """An image an annotation file declares, as the file names it, with its declared size."""

    name: str  # as written in the file: COCO file_name, VOC filename, CVAT name, LS data.image
    width: float | None = None
    height: float | None = None
    # Coordinates already normalised to [0, 1] (YOLO txt): width and height are 1, and there is
    # no declared size to compare with the decoded image.
    normalised: bool = False


@dataclass(frozen=True)
class RawAnnotation:
    """One annotation as the file gives it; the box is axis-aligned, in the image's pixels."""

    image: str  # the image's name as the file writes it (matches a RawImage.name)
    where: str  # how a person finds it in the file: "annotation id 17", "object 3", "result r1"
    label: str  # the category name
    xyxy: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels
    shape: str = "box"  # "box", or what was converted: "polygon", "rotated"
    crowd: bool = False  # COCO iscrowd: a region of many objects, never an object


@dataclass(frozen=True)
class AnnotationProblem:
    """A quarantined annotation: the file, where in it, its image, the rule and a reason."""

    file: str
    where: str
    image: str
    rule: str
    reason: str


@dataclass
class ParsedFile:
    """What an adapter read from one annotation file."""

    images: list[RawImage] = field(default_factory=list)
    annotations: list[RawAnnotation] = field(default_factory=list)
    # Annotations the parser itself had to reject (a missing field, a duplicate id).
    problems: list[AnnotationProblem] = field(default_factory=list)


# An adapter: (path of the annotation file inside the batch, its bytes) -> ParsedFile.
Parser = Callable[[str, bytes], ParsedFile]


@dataclass(frozen=True)
class Box:
    """A box in the standard form: class id, centre and size normalised to the image."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float
    converted: str = ""  # "" for a box, else the shape it was converted from

    def row(self) -> tuple[int, float, float, float, float]:
        return (self.class_id, self.cx, self.cy, self.w, self.h)


@dataclass
class ImageLabels:
    """The labels an import gives one image of the batch."""

    image: str  # path inside the batch, e.g. images/a.jpg
    file: str  # the annotation file that labels it
    width: float | None  # the size the annotation file declares (checked against the decode)
    height: float | None
    normalised: bool = False  # coordinates came normalised: there is no size to check
    boxes: list[Box] = field(default_factory=list)
    n_in: int = 0  # annotations the file holds for this image
    quarantined: int = 0
    crowd: int = 0
    incomplete: list[str] = field(default_factory=list)  # rules that left an object unboxed

    @property
    def converted(self) -> int:
        return sum(1 for b in self.boxes if b.converted)


@dataclass
class Imported:
    """Every annotation file of a batch, converted: labels per image, and what was refused."""

    format: str
    adapter: str  # name and version, recorded as the samples' ``label_source`` detail
    labels: dict[str, ImageLabels] = field(default_factory=dict)  # by image path in the batch
    problems: list[AnnotationProblem] = field(default_factory=list)
    bad_files: dict[str, tuple[str, str]] = field(default_factory=dict)  # file -> (rule, reason)

    seen: int = 0  # annotations read from every file (a bad file's are not read)

    @property
    def boxes(self) -> int:
        return sum(len(x.boxes) for x in self.labels.values())

    @property
    def crowd(self) -> int:
        return sum(x.crowd for x in self.labels.values())

    @property
    def converted(self) -> int:
        return sum(x.converted for x in self.labels.values())

    def check_accounted(self) -> None:
        """Every annotation read became a box, a crowd region or a quarantined annotation."""
        if self.seen != self.boxes + self.crowd + len(self.problems):
            raise RuntimeError(
                f"import lost track of annotations: {self.seen} read != {self.boxes} boxes + "
                f"{self.crowd} crowd + {len(self.problems)} quarantined"
            )


def class_index(classes: Sequence[str], aliases: Mapping[str, str] | None = None) -> dict[str, int]:
    """Name -> class id: the platform's names, then each alias to its target's id."""
    index = {name: i for i, name in enumerate(classes)}
    for alias, target in (aliases or {}).items():
        if target in index:
            index.setdefault(alias, index[target])
    return index


def _image_key(name: str, images: Mapping[str, str]) -> str | None:
    """The batch's image path for a name in an annotation file (``images/<basename>``)."""
    # Plain string work: this runs once per annotation (50,000 in a large COCO file).
    return images.get(name.replace("\\", "/").rsplit("/", 1)[-1])


def _normalise(
    xyxy: tuple[float, float, float, float], width: float, height: float
) -> tuple[float, float, float, float] | str:
    """(cx, cy, w, h) in [0, 1], or the reason the box is refused."""
    x1, y1, x2, y2 = xyxy
    if not all(math.isfinite(v) for v in xyxy):
        return "a coordinate is not a finite number"
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return f"size {x2 - x1:g}x{y2 - y1:g} px is not positive"
    # Half a pixel of slack: tools round, and a box drawn to the edge may end at width + 0.5.
    if x1 < -0.5 or y1 < -0.5 or x2 > width + 0.5 or y2 > height + 0.5:
        return f"box ({x1:g}, {y1:g})-({x2:g}, {y2:g}) lies outside the {width:g}x{height:g} image"
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)
    return ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)


def collect(
    fmt: str,
    adapter: str,
    parsed: Iterable[tuple[str, ParsedFile | AnnotationFileError]],
    image_paths: Iterable[str],
    classes: Sequence[str],
    aliases: Mapping[str, str] | None = None,
) -> Imported:
    """Apply the rules above to every parsed file of a batch (in the order given)."""
    images = {p.rsplit("/", 1)[-1]: p for p in image_paths}
    index = class_index(classes, aliases)
    out = Imported(fmt, adapter)
    for file, result in parsed:
        if isinstance(result, AnnotationFileError):
            out.bad_files[file] = (result.rule, result.reason)
            continue
        out.seen += len(result.problems) + len(result.annotations)
        declared: dict[str, RawImage] = {}
        named: dict[str, str] = {}  # batch image path -> the one name this file gives it
        for img in result.images:
            key = _image_key(img.name, images)
            if key is None:
                continue  # an image the file declares but nothing annotates: reported below
            if key in out.labels and out.labels[key].file != file:
                continue  # its annotations here are refused one by one (labelled_twice)
            if named.setdefault(key, img.name) != img.name:
                continue  # train/a.jpg and val/a.jpg: the second's annotations are refused
            declared[img.name] = img
            out.labels.setdefault(key, _labels_for(key, file, img))
        for problem in result.problems:
            _count_parser_problem(out, file, problem, declared, images, named)
        for ann in result.annotations:
            _take(out, file, ann, declared, images, named, index, classes)
    for labels in out.labels.values():
        if labels.n_in != len(labels.boxes) + labels.quarantined + labels.crowd:
            raise RuntimeError(f"import lost track of {labels.image}'s annotations: {labels}")
    out.check_accounted()
    return out


def _labels_for(key: str, file: str, img: RawImage | None) -> ImageLabels:
    if img is None:
        return ImageLabels(key, file, None, None)
    if img.normalised:
        return ImageLabels(key, file, 1.0, 1.0, normalised=True)
    return ImageLabels(key, file, img.width, img.height)


def _count_parser_problem(
    out: Imported,
    file: str,
    problem: AnnotationProblem,
    declared: Mapping[str, RawImage],
    images: Mapping[str, str],
    named: Mapping[str, str],
) -> None:
    """A parser's refusal counts against its image (by the batch's path), like any other."""
    key = _image_key(problem.image, images) if problem.image else None
    labels = out.labels.get(key) if key else None
    if key and labels is None and named.get(key, problem.image) == problem.image:
        labels = out.labels[key] = _labels_for(key, file, declared.get(problem.image))
    if key and labels is not None and labels.file == file:
        labels.n_in += 1
        labels.quarantined += 1
        if problem.rule not in COMPLETE_DESPITE:
            labels.incomplete.append(problem.rule)
        problem = AnnotationProblem(file, problem.where, key, problem.rule, problem.reason)
    out.problems.append(problem)


def _take(
    out: Imported,
    file: str,
    ann: RawAnnotation,
    declared: Mapping[str, RawImage],
    images: Mapping[str, str],
    named: Mapping[str, str],
    index: Mapping[str, int],
    classes: Sequence[str],
) -> None:
    key = _image_key(ann.image, images)
    shown = clip(display_name(ann.label), 80)

    def refuse(rule: str, reason: str, labels: ImageLabels | None) -> None:
        if labels is not None:
            labels.quarantined += 1
            if rule not in COMPLETE_DESPITE:
                labels.incomplete.append(rule)
        where = f"{file}: {ann.where} of {key or clip(display_name(ann.image))}"
        out.problems.append(AnnotationProblem(file, ann.where, key or ann.image, rule,
                                              f"{where}: {reason}"))  # fmt: skip

    if key is None:
        refuse("image_not_in_batch", f"names image {clip(display_name(ann.image))}, which the "
               "batch does not hold (expected images/<name>)", None)  # fmt: skip
        return
    labels = out.labels.get(key)
    if named.get(key, ann.image) != ann.image:
        refuse("labelled_twice", f"names the same image as {named[key]}, which this file "
               "labels first; one name an image", None)  # fmt: skip
        return
    if labels is not None and labels.file != file:
        refuse("labelled_twice", f"image {key} is already labelled by {labels.file}, which "
               "wins; one file labels an image", None)  # fmt: skip
        return
    if labels is None:
        labels = out.labels[key] = _labels_for(key, file, declared.get(ann.image))
    labels.n_in += 1
    if ann.crowd:
        labels.crowd += 1
        return
    class_id = index.get(ann.label)
    if class_id is None:
        refuse("unknown_class", f"category {shown!r} is not one of the platform's classes "
               f"({', '.join(classes)}); map it with CV_ASSETS_CLASS_ALIASES", labels)  # fmt: skip
        return
    if labels.width is None or labels.height is None or labels.width <= 0 or labels.height <= 0:
        refuse("image_size_unknown", "the file gives no positive width and height for its "
               "image, so the box cannot be placed", labels)  # fmt: skip
        return
    box = _normalise(ann.xyxy, labels.width, labels.height)
    if isinstance(box, str):
        rule = "box_outside_image" if "outside" in box else "bad_box"
        refuse(rule, box, labels)
        return
    labels.boxes.append(Box(class_id, *box, converted="" if ann.shape == "box" else ann.shape))
