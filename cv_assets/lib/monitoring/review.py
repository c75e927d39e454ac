"""The review queue: labels that the champion contradicts strongly, ranked for a person to check.

Three kinds of disagreement are found in each image, from the label boxes and the champion's
confident detections (``conf >= conf_min``):

- ``missing_label``: a prediction that overlaps no label box (IoU < ``iou_match`` with all of them):
  an object the annotator may have missed. Severity ``conf * (1 - best IoU)``.
- ``class_mismatch``: a label box with no same-class prediction at IoU >= ``iou_ok``, but a
  prediction of another class at IoU >= ``iou_ok``: the class may be wrong. Severity
  ``conf * IoU`` (a confident, well-placed box of another class is the strongest evidence).
- ``low_iou``: a label box whose best same-class prediction has IoU in [``iou_match``, ``iou_ok``):
  the box may be badly drawn. Severity ``conf * (1 - IoU)``.

A label box yields at most one item: ``class_mismatch`` wins over ``low_iou``, since a box of
another class that fits better than any box of the labelled class says more about the label.
Every severity lies in [0, 1], so one ranking orders all kinds: highest first, ties broken by
image and position so the order is the same on every run. Label boxes the champion does not see
at all are not queued: that is more often the model's miss than the annotator's.
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
from cv_assets.lib.core.metrics import box_iou, read_yolo_truth
from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image

log = logging.getLogger(__name__)

KINDS = ("missing_label", "low_iou", "class_mismatch")
LABEL_COLOR = (0, 230, 0)  # the green of ground truth in the evaluation's prediction grid
PRED_COLOR = (255, 0, 255)  # magenta: no class colour and no photo tone comes close to it


@dataclass(frozen=True)
class ReviewSettings:
    conf_min: float = 0.5  # predictions below this confidence are never evidence
    iou_match: float = 0.1  # below: a prediction overlaps no label box
    iou_ok: float = 0.5  # at or above: a prediction agrees with a label box's position
    crop_margin: float = 0.5  # context around the boxes, as a share of their extent
    crop_size: int = 128  # crops are square PNGs of this side in pixels


Box = tuple[float, float, float, float]  # x1, y1, x2, y2, normalised to [0, 1]


@dataclass(frozen=True)
class Disagreement:
    """One finding in one image. Boxes are normalised xyxy; ``label_line`` counts from 1."""

    kind: str
    score: float
    iou: float
    label_line: int | None = None
    label_class: int | None = None
    label_box: Box | None = None
    pred_class: int | None = None
    pred_conf: float | None = None
    pred_box: Box | None = None

    def sort_key(self) -> tuple[float, ...]:
        first = self.label_box or self.pred_box or (0.0, 0.0, 0.0, 0.0)
        return (-self.score, KINDS.index(self.kind), *first)


def _box(row: np.ndarray) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def find_disagreements(
    truth: np.ndarray, preds: np.ndarray, settings: ReviewSettings = ReviewSettings()
) -> list[Disagreement]:
    """Disagreements between one image's labels and the champion's detections.

    Args:
        truth: (N, 5) ``[cls, x1, y1, x2, y2]`` in label-file order (``read_yolo_truth``).
        preds: (M, 6) ``[x1, y1, x2, y2, conf, cls]`` (``OnnxDetector.detect``).
    """
    truth = np.asarray(truth, dtype=float).reshape(-1, 5)
    preds = np.asarray(preds, dtype=float).reshape(-1, 6)
    preds = preds[preds[:, 4] >= settings.conf_min]
    iou = box_iou(truth[:, 1:5], preds[:, :4])  # (N, M)
    out = [_label_finding(i, truth[i], preds, iou[i], settings) for i in range(len(truth))]
    found = [d for d in out if d is not None]
    best = iou.max(0) if len(truth) else np.zeros(len(preds))
    for j in np.nonzero(best < settings.iou_match)[0]:
        p = preds[j]
        found.append(
            Disagreement(
                "missing_label",
                score=float(p[4] * (1 - best[j])),
                iou=float(best[j]),
                pred_class=int(p[5]),
                pred_conf=float(p[4]),
                pred_box=_box(p),
            )
        )
    return sorted(found, key=Disagreement.sort_key)


def _label_finding(
    line: int, label: np.ndarray, preds: np.ndarray, iou: np.ndarray, s: ReviewSettings
) -> Disagreement | None:
    """The one finding of a label box (``iou``: its IoU with every prediction), or None."""
    same = preds[:, 5] == label[0]
    same_iou = np.where(same, iou, -1.0)
    if len(preds) and same_iou.max() >= s.iou_ok:
        return None
    base = {"label_line": line + 1, "label_class": int(label[0]), "label_box": _box(label[1:])}
    other = np.where(~same & (iou >= s.iou_ok), preds[:, 4] * iou, -1.0)
    if len(preds) and other.max() >= 0:
        j = int(other.argmax())
        return Disagreement(
            "class_mismatch", float(other[j]), float(iou[j]), **base, **_pred(preds[j])
        )
    if len(preds) and same_iou.max() >= s.iou_match:
        j = int(same_iou.argmax())
        score = float(preds[j, 4] * (1 - iou[j]))
        return Disagreement("low_iou", score, float(iou[j]), **base, **_pred(preds[j]))
    return None


def _pred(p: np.ndarray) -> dict[str, Any]:
    return {"pred_class": int(p[5]), "pred_conf": float(p[4]), "pred_box": _box(p)}


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
        return f"{pred} where no label box overlaps (best IoU {item.iou:.2f})"
    if item.kind == "class_mismatch":
        return f"{label} but {pred} on the same object (IoU {item.iou:.2f})"
    return f"{label}: the best {pred} overlaps it only at IoU {item.iou:.2f}"


def caption(item: Disagreement, classes: Sequence[str]) -> str:
    if item.kind == "missing_label":
        return f"unlabelled {_name(classes, item.pred_class)} {item.pred_conf or 0:.2g}"
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
            ``OnnxDetector.detect`` returns them.
    """
    rows = samples.to_dict("records")
    found: list[tuple[int, Disagreement]] = []
    texts: list[str] = []
    for i, r in enumerate(rows):
        uri = str(r["image_uri"])
        preds = np.asarray(detect(uri, read_bytes(uri)), dtype=float).reshape(-1, 6)
        preds = preds[preds[:, 4] >= settings.conf_min]
        truth = read_yolo_truth(read_bytes(str(r["label_uri"])).decode())
        texts.append(predictions_text(preds))
        found += [(i, d) for d in find_disagreements(truth, preds, settings)]
    ranked = rank_items(found, max_items)
    table, crops = [], []
    for rank, (i, d) in enumerate(ranked, start=1):
        r = rows[i]
        with Image.open(io.BytesIO(read_bytes(str(r["image_uri"])))) as img:
            crops.append(crop_png(img, d, caption(d, classes), settings))
        table.append(_row(rank, d, r, texts[i], classes))
    df = pd.DataFrame.from_records(table, columns=QUEUE_COLUMNS)
    counts = {k: int((df["kind"] == k).sum()) for k in KINDS}
    log.info("%d images: %d disagreements, %d queued %s", len(rows), len(found), len(df), counts)
    return ReviewQueue(df, crops, images=len(rows), found=len(found), counts=counts)


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
            lambda uri, data: det.detect(read_image(uri, data), conf=settings.conf_min),
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
