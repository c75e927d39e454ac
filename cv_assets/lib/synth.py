"""Synthetic, labelled object-detection batches in the landing contract.

This module owns the *generator* side of the landing contract: it renders deterministic scenes of
filled shapes (square, circle, triangle) on textured, noisy backgrounds, applies distribution
shifts (brightness, contrast, blur, object scale, class mix), and lands them as batches::

    <landing_root>/<batch_id>/
        images/<stem>.jpg     RGB JPEG, quality 90
        labels/<stem>.txt     YOLO "class cx cy w h", normalised, "%d %.6f %.6f %.6f %.6f", LF
        batch.json            written last, atomically (temp file in the batch dir + os.replace)

It can also plant known faults (``FAULT_KINDS``: broken images, broken label lines, missing or
orphan files, duplicates, unportable names, symlinks) and quirks (``QUIRK_KINDS``: valid variants
a platform must accept), and reports exactly which files carry them, so that validation code can be
tested against a ground truth. It depends on numpy and Pillow only; no orchestration code.

Determinism: every sample is rendered from ``np.random.default_rng([seed, batch_index, i])``, so
the same arguments give byte-identical image and label files; only ``created_at`` in
``batch.json`` is wall-clock time.
"""

from __future__ import annotations

import io
import json
import logging
import math
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
from PIL import Image, ImageDraw, ImageFilter

logger = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("square", "circle", "triangle")
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

BATCH_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Valid batch ids (``fullmatch``)."""

JPEG_QUALITY = 90
BOMB_SIDE = 30000
"""Width and height that a ``decompression_bomb`` PNG header claims."""
SYMLINK_TARGETS_DIR = ".synth_targets"
"""Folder under the landing root holding the real files that ``symlink`` faults point to."""

_SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
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
_MIN_SIZE = 32
_MIN_BOX_PX = 2.0
_MAX_IOU = 0.5
_MIN_LUMA_GAP = 70.0
_PLAN_STREAM = 0xFFFF_FFFF  # third entropy word of the fault/quirk plan rng; never an image index
_BLUR_REFERENCE_PX = 640.0
_SHIFT_KEYS: tuple[str, ...] = ("brightness", "contrast", "blur", "scale", "class_mix")

Box = tuple[int, float, float, float, float]
"""(class id, cx, cy, w, h), normalised to [0, 1]."""


@dataclass(frozen=True)
class Shift:
    """A distribution shift applied to rendered scenes.

    ``brightness`` is added to every pixel as a fraction of full scale (0.25 = +64/255), then
    clipped; ``contrast`` multiplies deviations from the per-channel image mean; ``blur`` is a
    Gaussian blur radius in pixels at 640 px (scaled with the image side); ``scale`` multiplies
    object size; ``class_mix`` holds relative class weights (``None`` = uniform).
    """

    brightness: float = 0.0
    contrast: float = 1.0
    blur: float = 0.0
    scale: float = 1.0
    class_mix: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "blur", "scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Shift.{name} must be a finite number")
        if not -1.0 <= self.brightness <= 1.0:
            raise ValueError("Shift.brightness must be within [-1, 1] (a fraction of full scale)")
        if self.contrast < 0:
            raise ValueError("Shift.contrast must be >= 0")
        if self.blur < 0:
            raise ValueError("Shift.blur must be >= 0")
        if self.scale <= 0:
            raise ValueError("Shift.scale must be > 0")
        if self.class_mix is not None:
            mix = tuple(float(w) for w in self.class_mix)
            if not mix or any(not math.isfinite(w) or w < 0 for w in mix) or sum(mix) <= 0:
                raise ValueError(
                    "Shift.class_mix must hold finite weights >= 0, at least one of them > 0"
                )
            object.__setattr__(self, "class_mix", mix)


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
    """

    batch_id: str
    path: Path
    samples: int
    faults: dict[str, str] = field(default_factory=dict)
    quirks: dict[str, str] = field(default_factory=dict)
    files_landed: int = 0


# --------------------------------------------------------------------------------------------
# Shift parsing


def _parse_number(item: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"shift item {item!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"shift item {item!r}: {value!r} must be a finite number")
    return number


def _parse_class_mix(item: str, value: str, classes: Sequence[str]) -> tuple[float, ...]:
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p for p in parts):
        raise ValueError(
            f"shift item {item!r}: class_mix needs comma-separated weights, "
            f"e.g. 'class_mix={classes[0]}:3' or 'class_mix=' followed by {len(classes)} numbers"
        )
    named = [":" in p for p in parts]
    if any(named) and not all(named):
        raise ValueError(
            f"shift item {item!r}: class_mix must be all 'class:weight' pairs or all plain weights"
        )
    weights: list[float]
    if all(named):
        by_class: dict[str, float] = {}
        for part in parts:
            name, _, raw = part.partition(":")
            name = name.strip()
            if name not in classes:
                raise ValueError(
                    f"shift item {item!r}: unknown class {name!r} "
                    f"(expected one of {', '.join(classes)})"
                )
            if name in by_class:
                raise ValueError(f"shift item {item!r}: class {name!r} is given twice")
            by_class[name] = _parse_number(item, raw.strip())
        weights = [by_class.get(name, 0.0) for name in classes]
    else:
        if len(parts) != len(classes):
            raise ValueError(
                f"shift item {item!r}: class_mix has {len(parts)} plain weights "
                f"but there are {len(classes)} classes ({', '.join(classes)})"
            )
        weights = [_parse_number(item, p) for p in parts]
    if any(w < 0 for w in weights):
        raise ValueError(f"shift item {item!r}: class_mix weights must be >= 0")
    if sum(weights) <= 0:
        raise ValueError(f"shift item {item!r}: class_mix weights must not all be zero")
    return tuple(weights)


def parse_shift(items: Sequence[str], classes: Sequence[str] = CLASSES) -> Shift:
    """Parse ``key=value`` items (e.g. ``["brightness=0.25", "class_mix=square:3,circle:1"]``).

    Keys: brightness (in [-1, 1]), contrast (>= 0), blur (>= 0), scale (> 0) and class_mix
    (``name:weight`` pairs, omitted classes weigh 0, or exactly ``len(classes)`` plain weights;
    weights >= 0 and not all zero). Raises ``ValueError`` naming the item and the rule broken.
    """
    if not classes:
        raise ValueError("parse_shift needs at least one class")
    values: dict[str, float] = {}
    class_mix: tuple[float, ...] | None = None
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"shift item {item!r}: expected 'key=value'")
        if key not in _SHIFT_KEYS:
            raise ValueError(
                f"shift item {item!r}: unknown key {key!r} "
                f"(expected one of {', '.join(_SHIFT_KEYS)})"
            )
        if key in values or (key == "class_mix" and class_mix is not None):
            raise ValueError(f"shift item {item!r}: key {key!r} is given twice")
        if key == "class_mix":
            class_mix = _parse_class_mix(item, value, classes)
            continue
        number = _parse_number(item, value.strip())
        if key == "brightness" and not -1.0 <= number <= 1.0:
            raise ValueError(
                f"shift item {item!r}: brightness must be within [-1, 1] (a fraction of full scale)"
            )
        if key in ("contrast", "blur") and number < 0:
            raise ValueError(f"shift item {item!r}: {key} must be >= 0")
        if key == "scale" and number <= 0:
            raise ValueError(f"shift item {item!r}: scale must be > 0")
        values[key] = number
    return Shift(
        brightness=values.get("brightness", 0.0),
        contrast=values.get("contrast", 1.0),
        blur=values.get("blur", 0.0),
        scale=values.get("scale", 1.0),
        class_mix=class_mix,
    )


def format_shift(shift: Shift, classes: Sequence[str] = CLASSES) -> str:
    """Describe the non-default fields of ``shift`` as ``key=value`` items joined by ``;``.

    Returns ``"none"`` for the identity shift. Each item is accepted back by ``parse_shift``.
    """
    items: list[str] = []
    defaults = Shift()
    for key in ("brightness", "contrast", "blur", "scale"):
        value = float(getattr(shift, key))
        if value != getattr(defaults, key):
            items.append(f"{key}={value:g}")
    if shift.class_mix is not None:
        if len(shift.class_mix) == len(classes):
            mix = ",".join(f"{c}:{w:g}" for c, w in zip(classes, shift.class_mix, strict=True))
        else:
            mix = ",".join(f"{w:g}" for w in shift.class_mix)
        items.append(f"class_mix={mix}")
    return ";".join(items) if items else "none"


# --------------------------------------------------------------------------------------------
# Scene rendering


def _class_weights(shift: Shift, n_classes: int) -> np.ndarray:
    if shift.class_mix is None:
        return np.full(n_classes, 1.0 / n_classes)
    if len(shift.class_mix) != n_classes:
        raise ValueError(
            f"Shift.class_mix has {len(shift.class_mix)} weights but there are {n_classes} classes"
        )
    weights = np.asarray(shift.class_mix, dtype=np.float64)
    return weights / weights.sum()


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a small 2-D float32 grid to ``size x size``."""
    image = Image.fromarray(np.ascontiguousarray(grid, dtype=np.float32))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random colour gradient plus 3 octaves of value noise, as an RGB image.

    Everything is built on a small grid (the finest octave's lattice, 21..33 points a side; the
    coarser octaves are bilinearly upsampled onto it) and then bilinearly resized to
    ``size x size`` in one pass: a linear gradient survives bilinear interpolation exactly, and
    this keeps the full-resolution work to a single uint8 resize.
    """
    points = int(rng.integers(21, 34))
    axis = np.linspace(0.0, 1.0, points, dtype=np.float32)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    ramp = math.cos(theta) * axis[None, :] + math.sin(theta) * axis[:, None]
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    start, end = rng.uniform(40.0, 215.0, size=(2, 3)).astype(np.float32)
    grid = start + ramp[..., None] * (end - start)
    # Value noise: two coarse luminance octaves upsampled onto the lattice, the finest native.
    luma = np.zeros((points, points), dtype=np.float32)
    for low, high, amplitude in ((3, 6, 26.0), (8, 13, 13.0)):
        cells = int(rng.integers(low, high))
        coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
        luma += amplitude * _upsample(coarse, points)
    luma += 7.0 * rng.uniform(-1.0, 1.0, size=(points, points)).astype(np.float32)
    grid += luma[..., None]
    cells = int(rng.integers(2, 5))
    for channel in range(3):
        coarse = rng.uniform(-12.0, 12.0, size=(cells + 1, cells + 1)).astype(np.float32)
        grid[..., channel] += _upsample(coarse, points)
    np.clip(grid, 0.0, 255.0, out=grid)
    small = Image.fromarray(grid.astype(np.uint8))
    return small.resize((size, size), Image.Resampling.BILINEAR)


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _contrasting_colour(rng: np.random.Generator, local_mean: np.ndarray) -> tuple[int, int, int]:
    """A random colour whose luminance differs from ``local_mean``'s by at least 70/255."""
    local = _luma(local_mean)
    for _ in range(6):
        colour = rng.integers(0, 256, size=3)
        if abs(_luma(colour) - local) >= _MIN_LUMA_GAP:
            return int(colour[0]), int(colour[1]), int(colour[2])
    colour = rng.integers(0, 50, size=3) if local >= 128.0 else rng.integers(206, 256, size=3)
    return int(colour[0]), int(colour[1]), int(colour[2])


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _normalise_box(
    cls: int, box: tuple[float, float, float, float], size: int
) -> tuple[int, float, float, float, float]:
    """Pixel box -> YOLO (cls, cx, cy, w, h), exact to 6 decimals so cx +- w/2 stays in [0, 1]."""
    micro = [round(v / size * 1_000_000) for v in box]
    x0, y0, x1, y1 = (min(max(m, 0), 1_000_000) for m in micro)
    if (x1 - x0) % 2:
        x1 -= 1
    if (y1 - y0) % 2:
        y1 -= 1
    return (
        cls,
        (x0 + x1) // 2 / 1e6,
        (y0 + y1) // 2 / 1e6,
        (x1 - x0) / 1e6,
        (y1 - y0) / 1e6,
    )


def render_scene(
    rng: np.random.Generator, size: int, shift: Shift, n_classes: int = 3
) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """Render one ``size x size`` RGB scene and its YOLO boxes.

    1..8 filled shapes (class id ``k`` is drawn as ``("square", "circle", "triangle")[k % 3]``)
    of 6%..30% of the side times ``shift.scale``, squares and triangles rotated, placements whose
    IoU with an earlier box exceeds 0.5 skipped (partial occlusion is allowed and keeps its box).
    Boxes are ``(class, cx, cy, w, h)`` normalised, clipped to the image, ``w, h > 0``; there is
    always at least one. Contrast, brightness and blur shifts are applied after drawing.
    """
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} pixels, got {size}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    weights = _class_weights(shift, n_classes)
    image = _background(rng, size)
    background = np.asarray(image)
    draw = ImageDraw.Draw(image)

    target = int(rng.integers(1, 9))
    placed: list[tuple[float, float, float, float]] = []
    boxes: list[Box] = []
    attempts = 0
    while len(boxes) < target and attempts < 4 * target:
        attempts += 1
        cls = int(rng.choice(n_classes, p=weights))
        extent = float(rng.uniform(0.06, 0.30)) * shift.scale * size
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        margin = min(extent, float(size)) * 0.25
        cx, cy = (float(v) for v in rng.uniform(margin, size - margin, size=2))
        shape = _SHAPES[cls % len(_SHAPES)]
        points: list[tuple[float, float]] = []
        if shape == "circle":
            radius = extent / 2.0
            raw = (cx - radius, cy - radius, cx + radius, cy + radius)
        else:
            corners = 4 if shape == "square" else 3
            radius = extent / math.sqrt(2.0) if shape == "square" else extent * 0.6
            points = [
                (
                    cx + radius * math.cos(angle + k * 2.0 * math.pi / corners),
                    cy + radius * math.sin(angle + k * 2.0 * math.pi / corners),
                )
                for k in range(corners)
            ]
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            raw = (min(xs), min(ys), max(xs), max(ys))
        clipped = (
            min(max(raw[0], 0.0), float(size)),
            min(max(raw[1], 0.0), float(size)),
            min(max(raw[2], 0.0), float(size)),
            min(max(raw[3], 0.0), float(size)),
        )
        if clipped[2] - clipped[0] < _MIN_BOX_PX or clipped[3] - clipped[1] < _MIN_BOX_PX:
            continue
        if any(_iou(clipped, other) > _MAX_IOU for other in placed):
            continue
        x0, y0 = int(clipped[0]), int(clipped[1])
        x1, y1 = max(math.ceil(clipped[2]), x0 + 1), max(math.ceil(clipped[3]), y0 + 1)
        step = max(1, (x1 - x0) // 32)  # a sparse sample is plenty for the local mean
        local = background[y0:y1:step, x0:x1:step].reshape(-1, 3).mean(axis=0)
        colour = _contrasting_colour(rng, local)
        if shape == "circle":
            draw.ellipse(raw, fill=colour)
        else:
            draw.polygon(points, fill=colour)
        placed.append(clipped)
        boxes.append(_normalise_box(cls, clipped, size))

    # Per-pixel Gaussian (luminance) noise, then the shifts; band by band, since contiguous
    # (size, size) float32 planes are several times faster than an interleaved (size, size, 3).
    noise = np.float32(rng.uniform(3.0, 9.0)) * rng.standard_normal((size, size), np.float32)
    bands: list[Image.Image] = []
    for band in image.split():
        plane = np.asarray(band, dtype=np.float32) + noise
        if shift.contrast != 1.0:
            mean = np.float32(plane.mean())
            plane -= mean
            plane *= np.float32(shift.contrast)
            plane += mean
        if shift.brightness != 0.0:
            plane += np.float32(shift.brightness * 255.0)
        np.clip(plane, 0.0, 255.0, out=plane)
        bands.append(Image.fromarray(plane.astype(np.uint8)))
    image = Image.merge("RGB", bands)
    if shift.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(shift.blur * size / _BLUR_REFERENCE_PX))
    return image, boxes


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


def _plan(seed: int, batch_index: int, n: int, n_faults: int, n_quirks: int) -> _Plan:
    order = [
        int(i) for i in np.random.default_rng([seed, batch_index, _PLAN_STREAM]).permutation(n)
    ]
    faults = {order[j]: FAULT_KINDS[j % len(FAULT_KINDS)] for j in range(n_faults)}
    quirks = {order[n_faults + j]: QUIRK_KINDS[j % len(QUIRK_KINDS)] for j in range(n_quirks)}
    original = order[n_faults + n_quirks] if "duplicate_image" in faults.values() else None
    return _Plan(faults=faults, quirks=quirks, original=original)


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
) -> BatchSummary:
    batch_id = batch_dir.name
    images_dir = batch_dir / "images"
    labels_dir = batch_dir / "labels"
    images_dir.mkdir()
    labels_dir.mkdir()
    plan = _plan(seed, batch_index, images_per_batch, n_faults, n_quirks)
    summary = BatchSummary(batch_id=batch_id, path=batch_dir, samples=0)
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
            if quirk == "upper_ext":
                image_name = f"{stem}.JPG"
                summary.quirks[f"images/{image_name}"] = quirk
            elif quirk == "jpeg_ext":
                image_name = f"{stem}.jpeg"
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

    _atomic_write_json(
        batch_dir / "batch.json",
        {
            "batch_id": batch_id,
            "classes": list(classes),
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "source": f"cv-assets synth seed={seed} shift={format_shift(shift, classes)}",
        },
    )
    return summary


def write_batches(
    landing: Path,
    batches: int,
    images_per_batch: int,
    seed: int,
    shift: Shift = Shift(),
    corrupt_fraction: float = 0.0,
    size: int = 640,
    prefix: str = "batch",
    classes: Sequence[str] = CLASSES,
    quirk_fraction: float = 0.0,
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
    ):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {fraction}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} pixels, got {size}")
    if not classes or len(set(classes)) != len(classes) or not all(classes):
        raise ValueError(f"classes must be non-empty, unique, non-empty names, got {classes!r}")
    _class_weights(shift, len(classes))
    if not BATCH_ID_RE.fullmatch(f"{prefix}-0000"):
        raise ValueError(
            f"prefix {prefix!r} does not make a valid batch id ({BATCH_ID_RE.pattern})"
        )
    n_faults = round(corrupt_fraction * images_per_batch)
    n_quirks = round(quirk_fraction * images_per_batch)
    needs_original = 1 if n_faults > FAULT_KINDS.index("duplicate_image") else 0
    if n_faults + n_quirks + needs_original > images_per_batch:
        raise ValueError(
            f"{n_faults} faults + {n_quirks} quirks"
            + (" + 1 original for duplicate_image" if needs_original else "")
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
