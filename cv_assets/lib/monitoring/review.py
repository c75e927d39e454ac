"""The review queue: a batch's label boxes that are probably wrong, ranked for a person to check.

The method is confident learning for object detection (cleanlab's ObjectLab, in
``label_issues.py``): the champion's detections, down to a low confidence, against each image's
labels, give every label box and every confident detection a quality score in [0, 1]. An image
enters the queue only when one of its boxes scores at most ``max_quality``; each such box is one
item, of kind ``missing_label`` (cleanlab's overlooked), ``class_mismatch`` (swap), ``low_iou``
(badloc) or ``extra_label`` (a label box no detection overlaps). Items are ranked by severity,
``1 - quality``, highest first, ties broken by image and position so the order is the same on
every run. The confidence from which a detection is evidence is read on the champion's own
calibration against the batch's labels, so a weak champion gives little evidence and a short
queue, not a long list of its own mistakes. This module turns the findings into the table, crops
and captions a reviewer reads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.metrics import read_yolo_truth
from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image
from cv_assets.lib.monitoring.label_issues import (
    KINDS,
    Box,
    Disagreement,
    IssueSettings,
    find_label_issues,
)

log = logging.getLogger(__name__)

LABEL_COLOR = (0, 230, 0)  # the green of ground truth in the evaluation's prediction grid
PRED_COLOR = (255, 0, 255)  # magenta: no class colour and no photo tone comes close to it


@dataclass(frozen=True)
class ReviewSettings:
    conf_floor: float = 0.01  # detections below are no evidence; cleanlab wants all the rest
    conf_min: float | None = None  # confident from here; None: from the champion's calibration
    max_quality: float = 0.5  # a box whose cleanlab quality is at most this is queued
    iou_match: float = 0.1  # a label box no detection overlaps this much is an extra label
    crop_margin: float = 0.5  # context around the boxes, as a share of their extent
    crop_size: int = 128  # crops are square PNGs of this side in pixels

    @property
    def floor(self) -> float:
        """The evidence floor, never above an explicit ``conf_min`` (a champion whose scores are
        all tiny, as after two epochs, is confident on its own scale)."""
        return self.conf_floor if self.conf_min is None else min(self.conf_floor, self.conf_min)

    def issues(self) -> IssueSettings:
        return IssueSettings(self.floor, self.conf_min, self.max_quality, self.iou_match)


# --- crops ------------------------------------------------------------------------------------


def crop_region(boxes: Sequence[Box], width: int, height: int, margin: float) -> Box:
    """A square pixel region around ``boxes`` (normalised xyxy) with ``margin`` of context."""
    x1 = min(b[0] for b in boxes) * width
    y1 = min(b[1] for b in boxes) * height
    x2 = max(b[2] for b in boxes) * width
    y2 = max(b[3] for b in boxes) * height
    side = max(x2 - x1, y2 - y1, 8.0) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def crop_png(image: Image.Image, item: Disagreement, caption: str, s: ReviewSettings) -> bytes:
    """A square PNG of the region around the item's boxes: label green, prediction magenta."""
    boxes = [b for b in (item.label_box, item.pred_box) if b is not None]
    w, h = image.size
    region = crop_region(boxes, w, h, s.crop_margin)
    # PIL pads a region that leaves the image with black, which keeps every crop square.
    x1, y1, x2, y2 = (round(v) for v in region)
    tile = image.convert("RGB").crop((x1, y1, x2, y2))
    scale = s.crop_size / max(tile.width, 1)
    tile = tile.resize((s.crop_size, s.crop_size), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(tile)
    # The label goes on top, thinner, so that it still shows where the two boxes coincide.
    for box, color, width in ((item.pred_box, PRED_COLOR, 3), (item.label_box, LABEL_COLOR, 1)):
        if box is not None:
            px = [
                (box[0] * w - region[0]) * scale,
                (box[1] * h - region[1]) * scale,
                (box[2] * w - region[0]) * scale,
                (box[3] * h - region[1]) * scale,
            ]
            draw.rectangle(px, outline=color, width=width)
    font = ImageFont.load_default()
    text_box = draw.textbbox((2, 2), caption, font=font)
    draw.rectangle(text_box, fill=(0, 0, 0))
    draw.text((2, 2), caption, fill=(255, 255, 255), font=font)
    buf = io.BytesIO()
    tile.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def thumbnail_png(png: bytes, side: int = 96, colors: int = 64) -> bytes:
    """A small palette PNG of a crop, light enough to inline ten of them in UI metadata."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.quantize(colors, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# --- words and files --------------------------------------------------------------------------


def yolo_box(box: Box | None) -> str:
    """``cx cy w h`` of a normalised xyxy box, as in a label file ("" for none)."""
    if box is None:
        return ""
    x1, y1, x2, y2 = box
    return f"{(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"


def predictions_text(preds: np.ndarray) -> str:
    """Detections as a YOLO label file (conf dropped), clipped, highest confidence first."""
    preds = np.asarray(preds, dtype=float).reshape(-1, 6)
    order = np.argsort(-preds[:, 4], kind="stable")
    lines = []
    for p in preds[order]:
        x1, y1, x2, y2 = np.clip(p[:4], 0, 1)
        if x2 > x1 and y2 > y1:
            lines.append(f"{int(p[5])} {yolo_box((x1, y1, x2, y2))}\n")
    return "".join(lines)


def _name(classes: Sequence[str], c: int | None) -> str:
    return "" if c is None else classes[c] if 0 <= c < len(classes) else f"class {c}"


def describe(item: Disagreement, classes: Sequence[str]) -> str:
    """One sentence a reviewer reads next to the crop."""
    label = f"label {_name(classes, item.label_class)} (line {item.label_line})"
    pred = f"champion {_name(classes, item.pred_class)} {item.pred_conf or 0:.2g}"
    if item.kind == "missing_label":
        return f"{pred} where no label box overlaps: an unlabelled object?"
    if item.kind == "class_mismatch":
        return f"{label} but {pred} on the same object (IoU {item.iou:.2f})"
    if item.kind == "extra_label":
        seen = f"; the nearest is {pred} at IoU {item.iou:.2f}" if item.pred_box else ""
        return f"{label}: the champion sees no object there{seen}"
    return f"{label}: the best {pred} overlaps it only at IoU {item.iou:.2f}"


def caption(item: Disagreement, classes: Sequence[str]) -> str:
    if item.kind == "missing_label":
        return f"unlabelled {_name(classes, item.pred_class)} {item.pred_conf or 0:.2g}"
    if item.kind == "extra_label":
        return f"{_name(classes, item.label_class)}: nothing seen"
    return f"{_name(classes, item.label_class)} vs {_name(classes, item.pred_class)}"


# --- one batch --------------------------------------------------------------------------------

QUEUE_COLUMNS = [
    "rank",
    "kind",
    "score",
    "stem",
    "sha256",
    "source",
    "image_uri",
    "label_uri",
    "label_line",
    "label_class",
    "label_box",
    "pred_class",
    "pred_conf",
    "pred_box",
    "iou",
    "details",
    "crop",
    "predictions",
]


@dataclass
class ReviewQueue:
    table: pd.DataFrame  # QUEUE_COLUMNS, one row per item, by rank
    crops: list[bytes]  # the PNG of each row, in the same order
    images: int  # images looked at
    found: int  # items before the ``max_items`` cap
    counts: dict[str, int] = field(default_factory=dict)  # items in the queue, by kind
    flagged: int = 0  # images with at least one item
    conf_min: float = 1.0  # the confidence from which a detection was confident evidence

    def table_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.table.to_parquet(buf, index=False)
        return buf.getvalue()

    def top_rows(self, n: int) -> list[tuple[Any, ...]]:
        """(rank, kind, score, stem, details) of the ``n`` most severe items."""
        cols = ["rank", "kind", "score", "stem", "details"]
        return [tuple(r) for r in self.table[cols].head(n).itertuples(index=False)]


def crop_name(rank: int, stem: str) -> str:
    return f"{rank}_{stem}.png"


def rank_items(
    found: Sequence[tuple[int, Disagreement]], max_items: int
) -> list[tuple[int, Disagreement]]:
    """(image index, item) pairs, most severe first; ties by image, then kind and position."""
    ordered = sorted(found, key=lambda f: (-f[1].score, f[0], *f[1].sort_key()))
    return ordered[:max_items]


def build_queue(
    samples: pd.DataFrame,
    read_bytes: Callable[[str], bytes],
    detect: Callable[[str, bytes], np.ndarray],
    classes: Sequence[str],
    settings: ReviewSettings = ReviewSettings(),
    max_items: int = 200,
) -> ReviewQueue:
    """The ranked queue of a batch's accepted samples (``stem``, ``image_uri``, ``label_uri``...).

    Args:
        read_bytes: bytes of an artifact by URI.
        detect: the champion's detections of an image (URI, bytes), ``(M, 6)`` as
            ``OnnxDetector.detect`` returns them, down to ``settings.floor``.
    """
    rows = samples.to_dict("records")
    truths, preds, sizes = [], [], []
    for r in rows:
        uri = str(r["image_uri"])
        data = read_bytes(uri)
        with Image.open(io.BytesIO(data)) as img:
            sizes.append(img.size)
        preds.append(np.asarray(detect(uri, data), dtype=float).reshape(-1, 6))
        truths.append(read_yolo_truth(read_bytes(str(r["label_uri"])).decode()))
    issues = find_label_issues(truths, preds, sizes, len(classes), settings.issues())
    found = [(i, d) for i in issues.flagged for d in issues.findings[i]]
    ranked = rank_items(found, max_items)
    table, crops = [], []
    for rank, (i, d) in enumerate(ranked, start=1):
        r = rows[i]
        with Image.open(io.BytesIO(read_bytes(str(r["image_uri"])))) as img:
            crops.append(crop_png(img, d, caption(d, classes), settings))
        # The suggestion is what the champion is confident of, the same evidence as the queue's.
        text = predictions_text(preds[i][preds[i][:, 4] >= issues.conf_high])
        table.append(_row(rank, d, r, text, classes))
    df = pd.DataFrame.from_records(table, columns=QUEUE_COLUMNS)
    counts = {k: int((df["kind"] == k).sum()) for k in KINDS}
    log.info("%d images: %d issues, %d queued %s", len(rows), len(found), len(df), counts)
    return ReviewQueue(
        df,
        crops,
        images=len(rows),
        found=len(found),
        counts=counts,
        flagged=len(issues.flagged),
        conf_min=issues.conf_high,
    )


def review_batch(
    store: Any,
    *,
    samples_uri: str,
    detector_uri: str,
    classes: Sequence[str],
    settings: ReviewSettings = ReviewSettings(),
    max_items: int = 200,
) -> ReviewQueue:
    """The queue of one validated batch, through the champion's ONNX file in onnxruntime."""

    def read_bytes(uri: str) -> bytes:
        return store.get_bytes(store.key_of(uri))

    samples = pd.read_parquet(io.BytesIO(read_bytes(samples_uri)))
    with scratch_dir("review") as tmp:
        det = OnnxDetector(local_file(store, detector_uri, Path(tmp)))
        return build_queue(
            samples,
            read_bytes,
            lambda uri, data: det.detect(read_image(uri, data), conf=settings.floor),
            classes,
            settings,
            max_items,
        )


def _row(
    rank: int, d: Disagreement, r: dict[str, Any], preds: str, classes: Sequence[str]
) -> dict[str, Any]:
    return {
        "rank": rank,
        "kind": d.kind,
        "score": round(d.score, 4),
        "stem": str(r["stem"]),
        "sha256": str(r["sha256"]),
        "source": str(r["source"]),
        "image_uri": str(r["image_uri"]),
        "label_uri": str(r["label_uri"]),
        "label_line": d.label_line,
        "label_class": _name(classes, d.label_class),
        "label_box": yolo_box(d.label_box),
        "pred_class": _name(classes, d.pred_class),
        "pred_conf": None if d.pred_conf is None else round(d.pred_conf, 4),
        "pred_box": yolo_box(d.pred_box),
        "iou": round(d.iou, 4),
        "details": describe(d, classes),
        "crop": crop_name(rank, str(r["stem"])),
        "predictions": preds,
    }
