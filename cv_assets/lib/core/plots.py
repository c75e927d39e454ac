"""Evaluation plots a person looks at: PR curves, a confusion matrix and a prediction grid.

This module owns the pictures of an object-detection evaluation, rendered as small PNGs (well
under ``MAX_PNG_BYTES``) so they can be embedded as ``data:`` URIs in Dagster markdown metadata
and logged to MLflow as they are. It knows nothing of Dagster or MLflow: it takes arrays and image
paths and returns PNG bytes (plus the two helpers that turn them into a data URI or a markdown
image).

Charts are drawn with matplotlib's object API (a ``Figure`` on an Agg canvas, never ``pyplot``),
so no global figure state is touched and nothing depends on the process's chosen backend; the
prediction grid is drawn with Pillow. Only bundled fonts are used (matplotlib's DejaVu Sans and
Pillow's default font), so nothing is fetched at run time.
"""

from __future__ import annotations

import base64
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps

MAX_PNG_BYTES = 120_000
"""What one embedded PNG may weigh; every renderer here stays under it by default."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BACKGROUND = "background"

DPI = 90
UNREADABLE_GREY = (128, 128, 128)
GT_COLOR = (0, 230, 0)
"""Ground truth in the prediction grid: pure green, which no class colour comes close to."""

# Colours tried for the photos in the prediction grid (None: full colour); 224 leaves palette room
# for the overlay colours, which are added exactly when the boxes are drawn.
_GRID_COLORS: tuple[int | None, ...] = (None, 224, 128, 64, 32, 16)

# Class colours, shared by the PR curve and the prediction grid; no green, so that a prediction
# never looks like a ground-truth box.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),  # blue
    (255, 127, 14),  # orange
    (214, 39, 40),  # red
    (148, 103, 189),  # purple
    (23, 190, 207),  # cyan
    (227, 119, 194),  # pink
    (140, 86, 75),  # brown
    (255, 215, 0),  # gold
    (0, 0, 139),  # navy
    (127, 127, 127),  # grey
    (255, 99, 71),  # tomato
    (70, 130, 180),  # steel blue
)

# matplotlib's text layout and font caches are shared by every figure in the process and are not
# documented as thread-safe; rendering is quick, so it is simply serialised.
RENDER_LOCK = threading.Lock()


def _class_color(index: int) -> tuple[int, int, int]:
    return _PALETTE[index % len(_PALETTE)]


def _class_color_01(index: int) -> tuple[float, float, float]:
    r, g, b = _class_color(index)
    return (r / 255, g / 255, b / 255)


def _class_name(classes: Sequence[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else f"cls {index}"


# --- encoding -------------------------------------------------------------------------------


def _png(img: Image.Image, compress_level: int = 9) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _png_within(img: Image.Image, max_bytes: int | None) -> tuple[bytes, bool]:
    """PNG bytes of ``img`` and whether they fit ``max_bytes``.

    A quick encode first (zlib level 6 is about four times faster than 9 on photos); the slow one
    only when the quick one is just over the limit, where the few percent it saves can matter.
    """
    data = _png(img, compress_level=6)
    if max_bytes is None or len(data) <= max_bytes:
        return data, True
    if len(data) <= max_bytes * 1.08:
        data = _png(img)
    return data, len(data) <= max_bytes


def _fit_png(img: Image.Image, max_bytes: int | None) -> bytes:
    """PNG bytes of ``img``, within ``max_bytes`` if given.

    Tries, in order: full colour, then palettes of 256, 64 and 16 colours at full size; only if
    even 16 colours is too heavy is the picture scaled down (keeping its proportions).
    """
    img = img.convert("RGB")
    data, fits = _png_within(img, max_bytes)
    if fits or max_bytes is None:
        return data
    for colors in (256, 64, 16):
        data, fits = _png_within(img.quantize(colors, method=Image.Quantize.MEDIANCUT), max_bytes)
        if fits:
            return data
    while not fits and min(img.size) > 32:
        ratio = max(0.5, min(0.9, math.sqrt(max_bytes / len(data)) * 0.95))
        size = (max(1, round(img.width * ratio)), max(1, round(img.height * ratio)))
        img = img.resize(size, Image.Resampling.BILINEAR)
        data, fits = _png_within(img.quantize(16, method=Image.Quantize.MEDIANCUT), max_bytes)
    return data


def figure_png(fig: Figure, max_bytes: int | None = MAX_PNG_BYTES) -> bytes:
    """Render a figure on an Agg canvas (no pyplot, no backend switch) and encode it as PNG."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    return _fit_png(img, max_bytes)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError, ValueError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _message_image(text: str, size: tuple[int, int], fill: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", size, fill)
    draw = ImageDraw.Draw(img)
    font = _font(max(10, min(size) // 10))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    xy = ((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top)
    draw.text(xy, text, fill=(255, 255, 255), font=font)
    return img


# --- precision-recall -------------------------------------------------------------------------


def pr_curve_png(
    recall_grid: np.ndarray,
    precision_by_class: np.ndarray,
    ap50_by_class: Sequence[float],
    classes: Sequence[str],
    title: str = "Precision-recall (IoU 0.5)",
) -> bytes:
    """One precision-recall curve per class and a thick mean curve over all classes.

    ``recall_grid`` is shape ``(R,)`` in ``[0, 1]``; ``precision_by_class`` is
    ``(n_classes, R)``. Each class line is labelled ``"<name> AP50=0.912"``; the mean line
    (NaN-aware, so a class with no ground truth does not drag it down) is labelled
    ``"all classes mAP50=<mean of ap50_by_class>"``. Both axes run from 0 to 1.
    """
    recall = np.asarray(recall_grid, dtype=float).reshape(-1)
    precision = np.asarray(precision_by_class, dtype=float)
    if precision.ndim == 1:
        precision = precision.reshape(1, -1)
    aps = np.asarray(list(ap50_by_class), dtype=float)
    n = len(classes)
    if precision.shape != (n, recall.size) and not (n == 0 and precision.size == 0):
        raise ValueError(
            f"precision_by_class has shape {precision.shape}, expected ({n}, {recall.size})"
        )
    if aps.size != n:
        raise ValueError(f"ap50_by_class has {aps.size} values for {n} classes")

    with RENDER_LOCK:
        fig = Figure(figsize=(5, 4), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        for i, name in enumerate(classes):
            ap = "n/a" if np.isnan(aps[i]) else f"{aps[i]:.3f}"
            ax.plot(
                recall, precision[i], lw=1.2, color=_class_color_01(i), label=f"{name} AP50={ap}"
            )
        finite = ~np.isnan(precision).all(axis=0) if n else np.zeros(recall.size, dtype=bool)
        if finite.any():
            mean = np.full(recall.size, np.nan)
            mean[finite] = np.nanmean(precision[:, finite], axis=0)
            valid_aps = aps[~np.isnan(aps)]
            map50 = f"{valid_aps.mean():.3f}" if valid_aps.size else "n/a"
            ax.plot(recall, mean, lw=3.0, color="black", label=f"all classes mAP50={map50}")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
        ax.set_title(title, fontsize=11)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(
                loc="lower left",
                fontsize=7 if n <= 8 else 5,
                ncol=1 if n <= 10 else 2,
                framealpha=0.8,
            )
        return figure_png(fig)


# --- confusion matrix -------------------------------------------------------------------------


def confusion_matrix_png(
    matrix: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix"
) -> bytes:
    """A detection confusion matrix: colours are column-normalised, cells show raw counts.

    ``matrix`` is ``(n + 1, n + 1)`` counts with rows = predicted class and columns = true class;
    the extra last row and column are ``"background"``: the last row counts true objects no
    prediction matched (missed), the last column predictions that matched no true object (false
    positives). Each column is coloured as a fraction of its total (an empty column stays
    white); the raw count is written in every cell.
    """
    counts = np.asarray(matrix, dtype=float)
    labels = [*classes, BACKGROUND]
    k = len(labels)
    if counts.shape != (k, k):
        raise ValueError(f"matrix has shape {counts.shape}, expected ({k}, {k})")
    totals = counts.sum(axis=0, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

    with RENDER_LOCK:
        side = 4.0 if k <= 6 else 5.0
        fig = Figure(figsize=(side + 1.0, side), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
        cbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label("fraction of true class", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        cell_font = max(4.0, min(9.0, 48.0 / k))
        for row in range(k):
            for col in range(k):
                value = counts[row, col]
                text = f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"
                color = "white" if norm[row, col] > 0.5 else "black"
                ax.text(col, row, text, ha="center", va="center", fontsize=cell_font, color=color)
        tick_font = max(5.0, min(8.0, 60.0 / k))
        ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=tick_font)
        ax.set_yticks(range(k), labels, fontsize=tick_font)
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        ax.set_title(title, fontsize=11)
        return figure_png(fig)


# --- prediction grid --------------------------------------------------------------------------


def _rows(boxes: np.ndarray, width: int, what: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=float)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] < width:
        raise ValueError(f"{what} must have shape (N, {width}), got {arr.shape}")
    return arr[:, :width]


def _load_tile(path: str | Path, tile: int) -> Image.Image | None:
    """The image at ``path`` as an RGB ``tile x tile`` square, or None if it cannot be read."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (tile, tile))  # JPEG: decode at a reduced scale, much faster
            img = ImageOps.exif_transpose(opened) or opened
            return img.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
    except Exception:  # any unreadable file (missing, truncated, not an image) is a grey tile
        return None


def _pixel_box(box: np.ndarray, tile: int, ox: int, oy: int) -> tuple[int, int, int, int]:
    """A normalised ``[x1, y1, x2, y2]`` as pixel corners inside the tile at ``(ox, oy)``."""
    x1, y1, x2, y2 = (float(v) for v in np.clip(np.nan_to_num(box[:4]), 0.0, 1.0))
    xs = sorted(min(round(v * tile), tile - 1) for v in (x1, x2))
    ys = sorted(min(round(v * tile), tile - 1) for v in (y1, y2))
    return (ox + xs[0], oy + ys[0], ox + xs[1], oy + ys[1])


@dataclass(frozen=True)
class _Sample:
    image: Image.Image | None  # None: unreadable
    gt: np.ndarray  # (N, 5) cls, x1, y1, x2, y2
    pred: np.ndarray  # (M, 6) x1, y1, x2, y2, conf, cls, already filtered and sorted by conf


def _compose(samples: Sequence[_Sample], ncols: int, nrows: int, tile: int) -> Image.Image:
    """The images alone (no overlays) laid out in the grid, as RGB."""
    grid = Image.new("RGB", (ncols * tile, nrows * tile), (40, 40, 40))
    for i, sample in enumerate(samples):
        if sample.image is None:
            img = _message_image("unreadable", (tile, tile), UNREADABLE_GREY)
        elif sample.image.size != (tile, tile):
            img = sample.image.resize((tile, tile), Image.Resampling.BILINEAR)
        else:
            img = sample.image
        grid.paste(img, ((i % ncols) * tile, (i // ncols) * tile))
    return grid


def _draw_overlays(
    canvas: Image.Image,
    samples: Sequence[_Sample],
    ncols: int,
    classes: Sequence[str],
    tile: int,
) -> None:
    """Boxes and labels, drawn on the (possibly palette) canvas in exact colours."""
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, tile // 20))
    width = max(2, tile // 112)
    for i, sample in enumerate(samples):
        if sample.image is None:
            continue
        ox, oy = (i % ncols) * tile, (i // ncols) * tile
        for p in sample.pred:
            outline = _class_color(int(p[5]))
            draw.rectangle(_pixel_box(p, tile, ox, oy), outline=outline, width=width)
        for g in sample.gt:  # ground truth thin, above the predictions so it stays visible
            draw.rectangle(_pixel_box(g[1:5], tile, ox, oy), outline=GT_COLOR, width=1)
        for p in sample.pred:  # labels last, so no box line crosses them
            x1, y1, _, _ = _pixel_box(p, tile, ox, oy)
            text = f"{_class_name(classes, int(p[5]))} {float(p[4]):.2f}"
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            w, h = right - left + 2, bottom - top + 2
            tx = min(x1, ox + max(0, tile - w))
            ty = y1 - h if y1 - h >= oy else y1
            draw.rectangle((tx, ty, tx + w, ty + h), fill=_class_color(int(p[5])))
            draw.text((tx + 1 - left, ty + 1 - top), text, fill=(255, 255, 255), font=font)


def _encode_grid(
    samples: Sequence[_Sample],
    ncols: int,
    nrows: int,
    classes: Sequence[str],
    tile: int,
    max_bytes: int | None,
) -> bytes:
    """The grid as PNG, within ``max_bytes`` if it can be.

    Photos barely compress as PNG, so the images alone are reduced to ever fewer colours (at full
    size, to keep the layout) and the boxes and labels are drawn afterwards, in their exact
    colours; only if even 16 colours is too heavy is the grid re-laid with smaller tiles.
    """
    size = tile
    while True:
        content = _compose(samples, ncols, nrows, size)
        tries: tuple[int | None, ...] = _GRID_COLORS if size == tile else (64, 16)
        data = b""
        for colors in tries:
            if colors is None:
                canvas = content.copy()
            else:
                canvas = content.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
            _draw_overlays(canvas, samples, ncols, classes, size)
            data, fits = _png_within(canvas, max_bytes)
            if fits:
                return data
        if size <= 16 or max_bytes is None:
            return data
        ratio = max(0.5, min(0.9, math.sqrt(max_bytes / len(data)) * 0.95))
        size = max(16, int(size * ratio))


def prediction_grid_png(
    samples: Sequence[tuple[str | Path, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    cols: int = 3,
    tile: int = 224,
    *,
    min_conf: float = 0.25,
    max_bytes: int | None = MAX_PNG_BYTES,
) -> bytes:
    """A grid of images with their ground truth and predicted boxes, as PNG bytes.

    Each sample is ``(image path, gt, pred)``: ``gt`` is ``(N, 5)`` rows of
    ``[cls, x1, y1, x2, y2]`` and ``pred`` is ``(M, 6)`` rows of ``[x1, y1, x2, y2, conf, cls]``,
    coordinates normalised to ``[0, 1]``. Each image is stretched to ``tile x tile`` (so the
    normalised boxes map straight onto it); ground truth is drawn thin in green, predictions with
    ``conf >= min_conf`` in their class colour with a ``"name 0.87"`` label. The grid has
    ``min(cols, len(samples))`` columns, so it is ``cols * tile`` wide once there are at least
    ``cols`` samples, and ``ceil(len / cols) * tile`` high; unused cells are dark grey.

    An image that cannot be read becomes a grey tile saying ``"unreadable"``: this never raises
    for a bad image (only for malformed box arrays or arguments). No samples gives a small PNG
    saying ``"no samples"``. To stay within ``max_bytes`` the photos are drawn with fewer colours
    (boxes and labels keep theirs); only a grid too big even at 16 colours gets smaller tiles.
    """
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    if tile < 16:
        raise ValueError(f"tile must be at least 16 pixels, got {tile}")
    if not samples:
        return _fit_png(_message_image("no samples", (240, 80), (90, 90, 90)), max_bytes)

    loaded: list[_Sample] = []
    for path, gt_boxes, pred_boxes in samples:
        gt = _rows(gt_boxes, 5, "gt boxes")
        pred = _rows(pred_boxes, 6, "predicted boxes")
        pred = pred[pred[:, 4] >= min_conf]  # NaN confidences drop out here too
        pred[:, 5] = np.nan_to_num(pred[:, 5], nan=-1.0)  # a NaN class is shown as "cls -1"
        pred = pred[np.argsort(pred[:, 4], kind="stable")]  # most confident drawn last, on top
        loaded.append(_Sample(_load_tile(path, tile), gt, pred))
    ncols = min(cols, len(loaded))
    nrows = math.ceil(len(loaded) / ncols)
    return _encode_grid(loaded, ncols, nrows, classes, tile, max_bytes)


# --- embedding --------------------------------------------------------------------------------


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes (raises ValueError if they are not a PNG)."""
    if bytes(png[:8]) != PNG_SIGNATURE:
        raise ValueError("not PNG data (bad signature)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image with the PNG inline: ``![alt](data:image/png;base64,...)``.

    Brackets in ``alt`` are escaped and newlines flattened, so any text is a safe alt.
    """
    safe = " ".join(alt.splitlines()).replace("[", "\\[").replace("]", "\\]")
    return f"![{safe}]({png_data_uri(png)})"
