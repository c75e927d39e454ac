"""Synthetic, labelled object-detection batches in the landing contract.

This module owns the *landing* side of the generator: it lands the scenes that
``cv_assets.lib.synth.scenes`` renders (its public names are re-exported here) as batches::

    <landing_root>/<batch_id>/
        images/<stem>.jpg     RGB JPEG, quality 90
        labels/<stem>.txt     YOLO "class cx cy w h", normalised, "%d %.6f %.6f %.6f %.6f", LF
        batch.json            written last, atomically (temp file in the batch dir + os.replace)

or, with ``fmt``, the annotations in another format of the contract (v2), written by
``cv_assets.lib.synth.formats``; ``unlabelled_fraction`` leaves images without any annotation.

It can also plant known faults (``FAULT_KINDS``: broken images, broken label lines, missing or
orphan files, duplicates, unportable names, symlinks) and quirks (``QUIRK_KINDS``: valid variants
a platform must accept), and reports exactly which files carry them, so that validation code can
be tested against a ground truth. It depends on numpy and Pillow only; no orchestration code.

Determinism: every sample is rendered from ``np.random.default_rng([seed, batch_index, i])``, so
the same arguments give byte-identical image and label files; only ``created_at`` in
``batch.json`` is wall-clock time.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from cv_assets.lib.ingest.landing import BATCH_ID_RE  # the landing contract's batch ids
from cv_assets.lib.synth import formats, scenes
from cv_assets.lib.synth.scenes import CLASSES, Box, Shift, format_shift, parse_shift, render_scene

# fmt: off
__all__ = [
    "BATCH_ID_RE", "BOMB_SIDE", "CLASSES", "FAULT_KINDS", "JPEG_QUALITY", "QUIRK_KINDS",
    "SYMLINK_TARGETS_DIR", "BatchSummary", "Box", "Shift", "format_shift", "parse_shift",
    "render_scene", "write_batches",
]
# fmt: on

logger = logging.getLogger(__name__)

FAULT_KINDS: tuple[str, ...] = (
    "truncated_jpeg",
    "zero_byte",
    "text_as_jpg",
    "decompression_bomb",
    "class_out_of_range",
    "coords_outside",
    "zero_area_box",
    "nan_value",
    "wrong_columns",
    "non_numeric",
    "missing_label",
    "orphan_label",
    "duplicate_image",
    "bad_filename",
    "symlink",
)
QUIRK_KINDS: tuple[str, ...] = ("upper_ext", "jpeg_ext", "utf8_bom", "crlf")


JPEG_QUALITY = 90
BOMB_SIDE = 30000
"""Width and height that a ``decompression_bomb`` PNG header claims."""
SYMLINK_TARGETS_DIR = ".synth_targets"
"""Folder under the landing root holding the real files that ``symlink`` faults point to."""

_LABEL_FAULTS: frozenset[str] = frozenset(
    {
        "class_out_of_range",
        "coords_outside",
        "zero_area_box",
        "nan_value",
        "wrong_columns",
        "non_numeric",
    }
)
_PLAN_STREAM = 0xFFFF_FFFF  # third entropy word of the fault/quirk plan rng; never an image index


@dataclass
class BatchSummary:
    """What ``write_batches`` landed for one batch.

    ``samples`` counts image files that have a label file with the same stem (good samples,
    quirks, label-level faults, and the image-level faults that keep their label:
    truncated_jpeg, zero_byte, text_as_jpg, decompression_bomb, duplicate_image, bad_filename,
    symlink); i.e. ``images_per_batch`` minus the ``missing_label`` and ``orphan_label`` faults.
    ``faults`` and ``quirks`` map a path relative to the batch dir to its kind. ``files_landed``
    counts items: every image file (with or without a label) plus every label file without an
    image. Each sample slot lands exactly one item, so it equals ``images_per_batch``.
    ``format`` and ``labels`` are batch.json's; ``unlabelled`` lists the images that no annotation
    names (``images/<name>``), and ``truth`` holds the generator's boxes of every other image that
    carries no fault, by image path: what a correct import must give back.
    """

    batch_id: str
    path: Path
    samples: int
    faults: dict[str, str] = field(default_factory=dict)
    quirks: dict[str, str] = field(default_factory=dict)
    files_landed: int = 0
    format: str = "yolo"
    labels: str = "full"
    unlabelled: list[str] = field(default_factory=list)
    truth: dict[str, list[Box]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Landing


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _bomb_png() -> bytes:
    """A genuine 8x8 PNG whose IHDR (CRC fixed up) claims ``BOMB_SIDE x BOMB_SIDE`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # 8-byte signature, then IHDR: length (4) | b"IHDR" (4) | width (4) | height (4) | ... | CRC.
    if data[12:16] != b"IHDR":
        raise RuntimeError("Pillow wrote a PNG without a leading IHDR chunk")
    (length,) = struct.unpack(">I", data[8:12])
    data[16:24] = struct.pack(">II", BOMB_SIDE, BOMB_SIDE)
    crc_at = 16 + length
    data[crc_at : crc_at + 4] = struct.pack(">I", zlib.crc32(bytes(data[12:crc_at])))
    return bytes(data)


def _box_line(box: Box) -> str:
    return "%d %.6f %.6f %.6f %.6f" % box  # noqa: UP031 - the contract is stated in %-format


def _bad_line(kind: str, box: Box, n_classes: int, variant: int) -> str:
    cls, cx, cy, w, h = box
    if kind == "class_out_of_range":
        return _box_line((n_classes + 4, cx, cy, w, h))
    if kind == "coords_outside":
        return _box_line((cls, 1.35, cy, w, h))
    if kind == "zero_area_box":
        return _box_line((cls, cx, cy, 0.0, h) if variant == 0 else (cls, cx, cy, w, -0.1))
    if kind == "nan_value":
        return f"{cls} {cx:.6f} {'nan' if variant == 0 else 'inf'} {w:.6f} {h:.6f}"
    if kind == "wrong_columns":
        return f"{cls} {cx:.6f} {cy:.6f} {w:.6f}"
    if kind == "non_numeric":
        return f"{cls} {cx:.6f} {cy:.6f} abc {h:.6f}"
    raise ValueError(f"not a label-level fault kind: {kind!r}")


def _label_text(lines: Sequence[str], newline: str = "\n") -> str:
    return "".join(line + newline for line in lines)


def _atomic_write_json(path: Path, payload: dict[str, object]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _next_batch_index(landing: Path, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"-(\d{4,})")
    highest = -1
    if landing.is_dir():
        for entry in landing.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1


@dataclass(frozen=True)
class _Plan:
    faults: dict[int, str]
    quirks: dict[int, str]
    original: int | None  # the good sample that duplicate_image copies
    unlabelled: frozenset[int]


def _plan(
    seed: int, batch_index: int, n: int, n_faults: int, n_quirks: int, n_unlabelled: int
) -> _Plan:
    order = [
        int(i) for i in np.random.default_rng([seed, batch_index, _PLAN_STREAM]).permutation(n)
    ]
    faults = {order[j]: FAULT_KINDS[j % len(FAULT_KINDS)] for j in range(n_faults)}
    quirks = {order[n_faults + j]: QUIRK_KINDS[j % len(QUIRK_KINDS)] for j in range(n_quirks)}
    original = order[n_faults + n_quirks] if "duplicate_image" in faults.values() else None
    # From the far end of the same permutation: disjoint from the above, and faults and quirks
    # land exactly as they did before unlabelled images existed.
    unlabelled = frozenset(order[n - n_unlabelled :])
    return _Plan(faults=faults, quirks=quirks, original=original, unlabelled=unlabelled)


def _write_batch(
    landing: Path,
    batch_dir: Path,
    batch_index: int,
    images_per_batch: int,
    seed: int,
    shift: Shift,
    n_faults: int,
    n_quirks: int,
    size: int,
    classes: Sequence[str],
    fmt: str,
    n_unlabelled: int,
) -> BatchSummary:
    batch_id = batch_dir.name
    images_dir = batch_dir / "images"
    labels_dir = batch_dir / "labels"
    images_dir.mkdir()
    if fmt == "yolo":
        labels_dir.mkdir()
    plan = _plan(seed, batch_index, images_per_batch, n_faults, n_quirks, n_unlabelled)
    labels = formats.labels_kind(n_unlabelled, images_per_batch)
    summary = BatchSummary(batch_id, batch_dir, samples=0, format=fmt, labels=labels)
    annotated: list[formats.Sample] = []  # for a format other than yolo
    fault_seen: dict[str, int] = {}
    originals: dict[int, tuple[bytes, list[Box]]] = {}

    def render(i: int) -> tuple[Image.Image, list[Box]]:
        rng = np.random.default_rng([seed, batch_index, i])
        return render_scene(rng, size, shift, len(classes))

    def original_sample(i: int) -> tuple[bytes, list[Box]]:
        if i not in originals:
            image, boxes = render(i)
            originals[i] = (_jpeg_bytes(image), boxes)
        return originals[i]

    for i in range(images_per_batch):
        stem = f"{batch_id}_{i:05d}"
        kind = plan.faults.get(i)
        quirk = plan.quirks.get(i)
        if i == plan.original or kind == "duplicate_image":
            source = plan.original if kind == "duplicate_image" else i
            assert source is not None
            jpeg, boxes = original_sample(source)
        else:
            scene, boxes = render(i)
            jpeg = _jpeg_bytes(scene)
        lines = [_box_line(box) for box in boxes]
        image_name, label_name = f"{stem}.jpg", f"{stem}.txt"
        image_bytes: bytes | None = jpeg
        label_bytes: bytes | None = _label_text(lines).encode("utf-8")
        if i in plan.unlabelled:
            label_bytes = None
            summary.unlabelled.append(f"images/{image_name}")
        elif kind is None:
            summary.truth[f"images/{_image_name(stem, quirk)}"] = boxes
        if fmt != "yolo":  # faults and quirks are yolo-only: this image is plain
            (images_dir / image_name).write_bytes(jpeg)
            truth = None if label_bytes is None else tuple(boxes)
            annotated.append(formats.Sample(image_name, size, size, truth))
            summary.files_landed += 1
            summary.samples += label_bytes is not None
            continue

        if kind is not None:
            variant = (batch_index + fault_seen.get(kind, 0)) % 2
            fault_seen[kind] = fault_seen.get(kind, 0) + 1
            key_is_label = False
            if kind == "truncated_jpeg":
                image_bytes = jpeg[: len(jpeg) // 2]
            elif kind == "zero_byte":
                image_bytes = b""
            elif kind == "text_as_jpg":
                image_bytes = b"this is not an image\n"
            elif kind == "decompression_bomb":
                image_name = f"{stem}.png"
                image_bytes = _bomb_png()
            elif kind in _LABEL_FAULTS:
                second = boxes[1] if len(boxes) >= 2 else boxes[0]
                bad = _bad_line(kind, second, len(classes), variant)
                lines = [lines[0], bad, *lines[2:]] if len(boxes) >= 2 else [lines[0], bad]
                label_bytes = _label_text(lines).encode("utf-8")
                key_is_label = True
            elif kind == "missing_label":
                label_bytes = None
            elif kind == "orphan_label":
                image_bytes = None
                key_is_label = True
            elif kind == "bad_filename":
                stem = f"..\\..\\evil_{i}"
                image_name, label_name = f"{stem}.jpg", f"{stem}.txt"
            elif kind == "symlink":
                target_dir = landing / SYMLINK_TARGETS_DIR / batch_id
                target_dir.mkdir(parents=True, exist_ok=True)
                target = target_dir / image_name
                target.write_bytes(jpeg)
                link = images_dir / image_name
                os.symlink(os.path.relpath(target, images_dir), link)
                image_bytes = None  # already landed, as the link
            key = f"labels/{label_name}" if key_is_label else f"images/{image_name}"
            summary.faults[key] = kind
        elif quirk is not None:
            if quirk in ("upper_ext", "jpeg_ext"):
                image_name = _image_name(stem, quirk)
                summary.quirks[f"images/{image_name}"] = quirk
            elif quirk == "utf8_bom":
                label_bytes = b"\xef\xbb\xbf" + _label_text(lines).encode("utf-8")
                summary.quirks[f"labels/{label_name}"] = quirk
            elif quirk == "crlf":
                label_bytes = _label_text(lines, "\r\n").encode("utf-8")
                summary.quirks[f"labels/{label_name}"] = quirk

        has_image = kind == "symlink" or image_bytes is not None
        if image_bytes is not None:
            (images_dir / image_name).write_bytes(image_bytes)
        if label_bytes is not None:
            (labels_dir / label_name).write_bytes(label_bytes)
        if has_image or label_bytes is not None:
            summary.files_landed += 1
        if has_image and label_bytes is not None:
            summary.samples += 1

    if fmt != "yolo":
        formats.write_annotations(fmt, batch_dir, annotated, classes)
    _atomic_write_json(
        batch_dir / "batch.json",
        {
            "batch_id": batch_id,
            "format": fmt,
            "labels": labels,
            "classes": list(classes),
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "source": f"cv-assets synth seed={seed} shift={format_shift(shift, classes)}",
        },
    )
    return summary


def _image_name(stem: str, quirk: str | None) -> str:
    """A good image's file name: ``<stem>.jpg``, unless an extension quirk renames it."""
    return {"upper_ext": f"{stem}.JPG", "jpeg_ext": f"{stem}.jpeg"}.get(quirk or "", f"{stem}.jpg")


def write_batches(
    landing: Path,
    batches: int,
    images_per_batch: int,
    seed: int,
    shift: Shift = Shift(),  # noqa: B008 - a frozen dataclass, immutable
    corrupt_fraction: float = 0.0,
    size: int = 640,
    prefix: str = "batch",
    classes: Sequence[str] = CLASSES,
    quirk_fraction: float = 0.0,
    fmt: str = "yolo",
    unlabelled_fraction: float = 0.0,
) -> list[BatchSummary]:
    """Land ``batches`` new batches of ``images_per_batch`` samples under ``landing``.

    Batch ids are ``f"{prefix}-{index:04d}"``, the index continuing after the highest existing
    ``{prefix}-NNNN`` entry (starting at 0), so repeated calls append. The batch index also seeds
    the scenes, so appended batches differ from earlier ones. In each batch
    ``round(corrupt_fraction * images_per_batch)`` samples become faults, kinds cycling through
    ``FAULT_KINDS`` from the first, and ``round(quirk_fraction * images_per_batch)`` other
    samples get quirks, cycling through ``QUIRK_KINDS``; faulted and quirked samples are disjoint
    from each other and from the good sample that ``duplicate_image`` copies (``ValueError`` if
    they cannot be). ``symlink`` faults point at real files under ``landing/.synth_targets/``.
    ``batch.json`` is written last and atomically.

    ``fmt`` (one of ``formats.FORMATS``) chooses how annotations are written; faults and quirks
    are yolo-only. ``round(unlabelled_fraction * images_per_batch)`` other images, chosen from the
    seed, get no annotation at all, and batch.json's ``labels`` says ``full``, ``partial`` or
    ``none``. In a ``partial`` batch a ``missing_label`` fault reads as one more unlabelled image.
    """
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    if images_per_batch < 1:
        raise ValueError(f"images_per_batch must be >= 1, got {images_per_batch}")
    if not 0 <= seed < 2**32:
        # One 32-bit entropy word: numpy's SeedSequence ignores trailing zero words, so a wider
        # seed could collide with another (seed, batch_index, image_index) triple.
        raise ValueError(f"seed must be within [0, 2**32), got {seed}")
    for name, fraction in (
        ("corrupt_fraction", corrupt_fraction),
        ("quirk_fraction", quirk_fraction),
        ("unlabelled_fraction", unlabelled_fraction),
    ):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {fraction}")
    if size < scenes.MIN_SIZE:
        raise ValueError(f"size must be >= {scenes.MIN_SIZE} pixels, got {size}")
    if not classes or len(set(classes)) != len(classes) or not all(classes):
        raise ValueError(f"classes must be non-empty, unique, non-empty names, got {classes!r}")
    scenes.class_weights(shift, len(classes))
    if not BATCH_ID_RE.fullmatch(f"{prefix}-0000"):
        raise ValueError(
            f"prefix {prefix!r} does not make a valid batch id ({BATCH_ID_RE.pattern})"
        )
    if fmt not in formats.FORMATS:
        raise ValueError(f"format must be one of {', '.join(formats.FORMATS)}, got {fmt!r}")
    n_faults = round(corrupt_fraction * images_per_batch)
    n_quirks = round(quirk_fraction * images_per_batch)
    if fmt != "yolo" and (corrupt_fraction or quirk_fraction):
        raise ValueError(
            f"corrupt_fraction and quirk_fraction plant YOLO-txt faults and quirks, so they need "
            f"format 'yolo', not {fmt!r}; write the {fmt} batch without them"
        )
    n_unlabelled = round(unlabelled_fraction * images_per_batch)
    needs_original = 1 if n_faults > FAULT_KINDS.index("duplicate_image") else 0
    if n_faults + n_quirks + needs_original + n_unlabelled > images_per_batch:
        raise ValueError(
            f"{n_faults} faults + {n_quirks} quirks"
            + (" + 1 original for duplicate_image" if needs_original else "")
            + (f" + {n_unlabelled} unlabelled" if n_unlabelled else "")
            + f" do not fit in {images_per_batch} images per batch; lower the fractions"
        )

    landing.mkdir(parents=True, exist_ok=True)
    summaries: list[BatchSummary] = []
    index = _next_batch_index(landing, prefix)
    for _ in range(batches):
        while True:
            batch_dir = landing / f"{prefix}-{index:04d}"
            if not BATCH_ID_RE.fullmatch(batch_dir.name):
                raise ValueError(f"batch id {batch_dir.name!r} is too long")
            try:
                batch_dir.mkdir()
                break
            except FileExistsError:  # another writer took it meanwhile
                index += 1
        summary = _write_batch(
            landing,
            batch_dir,
            index,
            images_per_batch,
            seed,
            shift,
            n_faults,
            n_quirks,
            size,
            classes,
            fmt,
            n_unlabelled,
        )
        logger.info(
            "landed synthetic batch %s: %d items, %d samples, %d faults, %d quirks",
            summary.batch_id,
            summary.files_landed,
            summary.samples,
            len(summary.faults),
            len(summary.quirks),
        )
        summaries.append(summary)
        index += 1
    return summaries
