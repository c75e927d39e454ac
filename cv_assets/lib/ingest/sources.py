"""Where each landed image's labels come from, before any image is decoded.

A batch is a set of *items*: an image, a label file without image, a stray file, or a bad
annotation file. Labels come from the contract's own YOLO files (``labels/<stem>.txt``, class ids
in the batch's class order) or from an annotation tool's export, converted by an adapter
(``formats/``). Either way they reach the pandera label schema as standard rows, so that schema
and the quarantine stay the one gate. An image without labels is *unlabelled* in a ``partial`` or
``none`` batch (taken into the unlabelled pool) and ``missing_label`` in a ``full`` one.

An annotation file that parses is not an item (like a label file paired with its image): its
annotations are accounted for one by one (``Imported.check_accounted``). One that does not parse
is a quarantined item, so ``accepted + unlabelled + quarantined == landed`` counts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from cv_assets.lib.ingest.formats import import_batch, is_annotation_file, is_image_place
from cv_assets.lib.ingest.formats.base import HUMAN, IMPORT_PREFIX, MODEL_PREFIX, REVIEW, Imported
from cv_assets.lib.ingest.labels import (
    LabelFile,
    LabelLimits,
    label_table,
    parse_label_file,
    validate_labels,
)
from cv_assets.lib.ingest.landing import Manifest, ManifestEntry, clip
from cv_assets.lib.ingest.names import IMAGE_EXTS, LABEL_EXTS, name_problem

# A batch whose batch.json source starts with this is a reviewed relabelling (cv-assets review
# import): its images were seen before on purpose, and its labels supersede the earlier ones.
CORRECTION_SOURCE_PREFIX = "review:"
# A batch collected from a Label Studio annotation round (``labelstudio:<round>``): people's
# labels (``human``) for images of the pool or of earlier batches, superseding what was there.
ROUND_SOURCE_PREFIX = "labelstudio:"


@dataclass
class Item:
    """One landed thing that must be accounted for."""

    kind: str  # "sample", "orphan_label", "stray" or "annotation"
    stem: str
    image: ManifestEntry | None = None
    label: ManifestEntry | None = None
    note: str = ""

    @property
    def path(self) -> str:
        entry = self.image or self.label
        return entry.path if entry else self.stem


@dataclass(frozen=True)
class BatchFormat:
    """``batch.json``'s ``format`` and ``labels`` (contract v2; v1 batches are yolo, full)."""

    fmt: str = "yolo"
    labels: str = "full"
    correction: bool = False  # its labels supersede earlier labels of the same images
    round: bool = False  # collected from a Label Studio annotation round
    # A model's labels (``model:v<version>``, auto-accepted pre-annotations): no person saw them,
    # so they are that source, which the dataset snapshot keeps out of val and test.
    model: str = ""

    @classmethod
    def of(cls, marker: Mapping[str, Any]) -> BatchFormat:
        source = str(marker.get("source") or "")
        return cls(
            str(marker.get("format") or "yolo"),
            str(marker.get("labels") or "full"),
            source.startswith((CORRECTION_SOURCE_PREFIX, ROUND_SOURCE_PREFIX)),
            source.startswith(ROUND_SOURCE_PREFIX),
            source if source.startswith(MODEL_PREFIX) else "",
        )

    @property
    def label_source(self) -> str:
        """Provenance of this batch's labels: ``human`` (a YOLO batch or an annotation round),
        ``import:<format>``, ``review`` or ``model:<version>``."""
        if self.model:
            return self.model
        if self.round:
            return HUMAN
        if self.correction:
            return REVIEW
        return HUMAN if self.fmt == "yolo" else f"{IMPORT_PREFIX}{self.fmt}"


def plan_items(manifest: Manifest, fmt: str = "yolo") -> list[Item]:
    """Pair images with their YOLO labels by stem (``yolo``), or set the format's annotation files
    apart; everything else is an orphan label or a stray."""
    images: dict[str, ManifestEntry] = {}
    labels: dict[str, ManifestEntry] = {}
    items: list[Item] = []
    for e in manifest.entries:
        p = PurePosixPath(e.path)
        ext = p.suffix.lower()
        if fmt != "yolo" and is_annotation_file(fmt, e.path):
            items.append(Item("annotation", p.stem, label=e))
        elif _is_image(fmt, p) and ext in IMAGE_EXTS:
            if p.stem in images:
                items.append(
                    Item("stray", p.stem, image=e, note=f"same stem as {images[p.stem].path}")
                )
            else:
                images[p.stem] = e
        elif fmt == "yolo" and len(p.parts) == 2 and p.parts[0] == "labels" and ext in LABEL_EXTS:
            labels[p.stem] = e
        else:
            items.append(Item("stray", p.stem, image=e))
    for stem, img in images.items():
        items.append(Item("sample", stem, image=img, label=labels.pop(stem, None)))
    items.extend(Item("orphan_label", stem, label=lab) for stem, lab in labels.items())
    return sorted(items, key=lambda i: i.path)


def _is_image(fmt: str, p: PurePosixPath) -> bool:
    if fmt == "yolo":
        return len(p.parts) == 2 and p.parts[0] == "images"
    return is_image_place(fmt, str(p))


def entry_problem(item: Item) -> tuple[str, str] | None:
    """Problems visible from the manifest alone (names, links, unreadable files, strays)."""
    for e in (item.image, item.label):
        if e is None:
            continue
        named = name_problem(e.path)
        if named:
            return named
        if e.kind == "symlink":
            return "symlink", f"{e.path}: symbolic link; links are never followed"
        if e.kind == "unreadable":
            return "unreadable", (
                f"{e.path}: could not be read when the batch was copied (permissions, or a file "
                "or folder gone or out of reach); not copied"
            )
        if e.kind != "file":
            return "not_a_regular_file", f"{e.path}: not a regular file ({e.kind})"
    if item.kind == "stray":
        why = item.note or "expected images/<stem>.jpg|.jpeg|.png or labels/<stem>.txt"
        return "unexpected_file", f"{item.path}: unexpected file ({why})"
    if item.kind == "orphan_label":
        return "label_without_image", f"{item.path}: label file with no image images/{item.stem}.*"
    return None


@dataclass
class ImageLabel:
    """The labels of one image, in the standard form, with where they came from."""

    rows: list[tuple[int, float, float, float, float]]
    source: str  # provenance: human, import:<format>, review (later model:<version>)
    file: str  # the label file or annotation file
    raw: bytes | None = None  # a YOLO label file's bytes, kept byte for byte when canonical
    size: tuple[float, float] | None = None  # what an annotation file declares, checked at decode
    converted: int = 0  # boxes converted from polygons or rotated boxes
    crowd: int = 0  # crowd regions excluded
    parsed: LabelFile | None = None  # a YOLO file's lines as the schema reads them


@dataclass
class LabelPlan:
    """What every item's labels are, before decoding: labels, problems, or no labels at all."""

    labels: dict[str, ImageLabel] = field(default_factory=dict)  # by image path
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)  # item path -> rule, why
    unlabelled: set[str] = field(default_factory=set)  # image paths taken in without labels
    # Why an image with annotations is in the pool all the same: an object of it has no box.
    incomplete: dict[str, str] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)  # annotation files read: not items
    imported: Imported | None = None


def plan_labels(
    items: Sequence[Item],
    batch: BatchFormat,
    read: Callable[[str], bytes],
    classes: Sequence[str],
    label_limits: LabelLimits,
    aliases: Mapping[str, str] | None = None,
    max_annotation_bytes: int = 64 * 2**20,
) -> LabelPlan:
    plan = LabelPlan()
    for it in items:
        if problem := entry_problem(it):
            plan.problems[it.path] = problem
    if batch.fmt == "yolo":
        _yolo_labels(plan, items, batch, read, label_limits)
    else:
        _imported_labels(plan, items, batch, read, classes, aliases, max_annotation_bytes)
    _schema_gate(plan, classes)
    for it in items:
        if it.kind != "sample" or it.path in plan.problems or it.path in plan.labels:
            continue
        if it.path in plan.incomplete:
            plan.unlabelled.add(it.path)
        elif batch.labels == "full":
            why = (
                f"no label file labels/{it.stem}.txt"
                if batch.fmt == "yolo"
                else f"no annotation file of this {batch.fmt} batch labels it (labels: full)"
            )
            plan.problems[it.path] = ("missing_label", f"{it.path}: {why}")
        else:
            plan.unlabelled.add(it.path)
    return plan


def _yolo_labels(
    plan: LabelPlan,
    items: Sequence[Item],
    batch: BatchFormat,
    read: Callable[[str], bytes],
    limits: LabelLimits,
) -> None:
    for it in items:
        if it.kind != "sample" or it.label is None or it.path in plan.problems:
            continue
        parsed = _read_label_file(it.label, read, limits)
        if isinstance(parsed, tuple):
            plan.problems[it.path] = parsed
        elif parsed.unreadable:
            plan.problems[it.path] = ("label_not_utf8", parsed.unreadable)
        else:  # rows are filled in once the schema has passed them (_schema_gate)
            plan.labels[it.path] = ImageLabel(
                [], batch.label_source, it.label.path, raw=parsed.raw, parsed=parsed
            )


def _imported_labels(
    plan: LabelPlan,
    items: Sequence[Item],
    batch: BatchFormat,
    read: Callable[[str], bytes],
    classes: Sequence[str],
    aliases: Mapping[str, str] | None,
    max_bytes: int,
) -> None:
    files = [it for it in items if it.kind == "annotation" and it.path not in plan.problems]
    images = [it.path for it in items if it.kind == "sample" and it.path not in plan.problems]
    imported = import_batch(
        batch.fmt,
        [(it.path, it.label.size if it.label else 0) for it in files],
        read,
        images,
        classes,
        aliases,
        max_bytes,
    )
    plan.imported = imported
    for it in files:
        if it.path in imported.bad_files:
            plan.problems[it.path] = imported.bad_files[it.path]
        else:
            plan.consumed.add(it.path)
    for path, got in imported.labels.items():
        if path in plan.problems:
            continue
        if got.incomplete:
            rules = Counter(got.incomplete)
            plan.incomplete[path] = (
                f"{path}: {len(got.incomplete)} of its {got.n_in} annotations in {got.file} were "
                f"quarantined ({', '.join(f'{r} x{n}' for r, n in sorted(rules.items()))}): "
                "an object has no box, so it is not trained on until it is labelled again"
            )
            continue
        size = None if got.normalised or got.width is None or got.height is None else (
            got.width, got.height)  # fmt: skip
        plan.labels[path] = ImageLabel(
            [b.row() for b in got.boxes],
            batch.label_source,
            got.file,
            size=size,
            converted=got.converted,
            crowd=got.crowd,
        )


def _schema_gate(plan: LabelPlan, classes: Sequence[str]) -> None:
    """Every image's rows through the pandera label schema, whatever format they came in."""
    files: list[LabelFile] = []
    owner: dict[str, str] = {}
    for path, label in plan.labels.items():
        parsed = label.parsed
        if parsed is None:  # converted rows: one line per box, in the annotation file's order
            where = f"{label.file} ({path})"
            rows = [(i + 1, 5, "", float(c), cx, cy, w, h) for i, (c, cx, cy, w, h) in
                    enumerate(label.rows)]  # fmt: skip
            parsed = LabelFile(where, rows)
        files.append(parsed)
        owner[parsed.path] = path
    errors = validate_labels(label_table(files), classes)
    count = Counter(e.file for e in errors)
    for err in errors:
        path = owner[err.file]
        if path in plan.labels:
            more = f" (+{count[err.file] - 1} more broken lines)" if count[err.file] > 1 else ""
            plan.problems[path] = (err.rule, err.message + more)
            del plan.labels[path]
    for label in plan.labels.values():
        if label.parsed is not None:
            label.rows = [(int(r[3]), r[4], r[5], r[6], r[7]) for r in label.parsed.rows]


def _read_label_file(
    entry: ManifestEntry, read: Callable[[str], bytes], limits: LabelLimits
) -> LabelFile | tuple[str, str]:
    """A sample's YOLO label file, parsed, or the limit it broke (checked before parsing)."""
    too_large = (
        "label_too_large",
        f"{entry.path}: {{n:,}} bytes exceeds the label file limit of {limits.max_bytes:,} "
        "(max_label_bytes); not parsed",
    )
    if entry.size > limits.max_bytes:
        return too_large[0], too_large[1].format(n=entry.size)
    raw = read(entry.path)
    if len(raw) > limits.max_bytes:
        return too_large[0], too_large[1].format(n=len(raw))
    try:
        lf = parse_label_file(entry.path, raw, limits.max_boxes)
    except Exception as e:  # parsing is total by design; a surprise is still this file's
        return "unreadable", f"{entry.path}: cannot be parsed ({type(e).__name__}: {clip(str(e))})"
    if lf.n_boxes > limits.max_boxes:
        return "too_many_boxes", (
            f"{entry.path}: {lf.n_boxes:,} boxes, more than the limit of {limits.max_boxes:,} "
            "an image (max_boxes_per_image); not parsed"
        )
    return lf
