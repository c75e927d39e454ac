"""Deterministic scenes and distribution shifts for the synthetic landing batches.

This module owns the *rendering* side of ``cv_assets.lib.synth.batches``: the class names
(``CLASSES``),
the YOLO box type (``Box``), distribution shifts (``Shift``, with ``parse_shift`` and
``format_shift`` for their ``key=value`` text form) and ``render_scene``, which draws filled
shapes (square, circle, triangle) on textured, noisy backgrounds, applies the shift and returns
the image with its normalised boxes. It depends on numpy and Pillow only; it writes no files.

Determinism: a scene depends only on the ``np.random.Generator`` passed in, so the same rng
state, size, shift and class count give the same pixels and boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("square", "circle", "triangle")
_SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
MIN_SIZE = 32
"""Smallest image side, in pixels, that ``render_scene`` (and ``write_batches``) accept."""
_MIN_BOX_PX = 2.0
_MAX_IOU = 0.5
_MIN_LUMA_GAP = 70.0
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


def class_weights(shift: Shift, n_classes: int) -> np.ndarray:
    """``shift.class_mix`` normalised to sum 1 (uniform if ``None``); ``ValueError`` on a length
    mismatch with ``n_classes``."""
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
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} pixels, got {size}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    weights = class_weights(shift, n_classes)
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
