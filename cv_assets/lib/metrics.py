"""Detection metrics: mAP50, mAP50-95, precision, recall, AP per class, confusion matrix.

One implementation scores every model format (PyTorch now, ONNX and int8 later) from plain arrays,
so "the same metric code" is literally the same function. It follows the COCO/Ultralytics
conventions: predictions are matched to ground truth of the same class at ten IoU thresholds
(0.50:0.05:0.95), highest IoU first; AP is the area under the precision envelope sampled at 101
recall points; precision and recall are reported at the confidence that maximises mean F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EPS = 1e-16


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N,4 xyxy) with every box in ``b`` (M,4 xyxy) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + EPS)


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = b.copy()
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def match_predictions(pred_cls: np.ndarray, true_cls: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """(n_pred, 10) bool: is each prediction a true positive at each IoU threshold."""
    correct = np.zeros((len(pred_cls), len(IOU_THRESHOLDS)), dtype=bool)
    if len(pred_cls) == 0 or len(true_cls) == 0:
        return correct
    iou = iou * (true_cls[:, None] == pred_cls[None, :])  # (n_true, n_pred)
    for k, t in enumerate(IOU_THRESHOLDS):
        ti, pi = np.nonzero(iou >= t)
        if not len(ti):
            continue
        m = np.stack([ti, pi, iou[ti, pi]], axis=1)
        if len(m) > 1:
            m = m[m[:, 2].argsort()[::-1]]
            m = m[np.unique(m[:, 1], return_index=True)[1]]
            m = m[np.unique(m[:, 0], return_index=True)[1]]
        correct[m[:, 1].astype(int), k] = True
    return correct


def _ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x)), mrec, mpre


@dataclass
class DetectionMetrics:
    map50: float
    map50_95: float
    precision: float
    recall: float
    ap50_per_class: list[float]
    ap_per_class: list[float]  # AP50-95 per class
    n_images: int
    n_instances: list[int]
    confusion: np.ndarray  # (nc+1, nc+1): rows predicted, cols true; last = background
    recall_grid: np.ndarray = field(repr=False)
    precision_curves: np.ndarray = field(repr=False)  # (nc, len(recall_grid)) at IoU 0.5

    def summary(self, classes: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "map50": round(self.map50, 4),
            "map50_95": round(self.map50_95, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "n_images": self.n_images,
        }
        for name, ap50, ap in zip(classes, self.ap50_per_class, self.ap_per_class, strict=True):
            out[f"ap50_{name}"] = round(ap50, 4)
            out[f"ap50_95_{name}"] = round(ap, 4)
        return out


def _confusion(
    pred: np.ndarray, truth: np.ndarray, nc: int, conf: float = 0.25, iou_t: float = 0.45
) -> np.ndarray:
    m = np.zeros((nc + 1, nc + 1), dtype=np.int64)
    pred = pred[pred[:, 4] >= conf] if len(pred) else pred
    gt_cls = truth[:, 0].astype(int) if len(truth) else np.zeros(0, int)
    if len(pred) == 0:
        for c in gt_cls:
            m[nc, c] += 1
        return m
    p_cls = pred[:, 5].astype(int)
    if len(truth) == 0:
        for c in p_cls:
            m[c, nc] += 1
        return m
    iou = box_iou(truth[:, 1:5], pred[:, :4])
    ti, pi = np.nonzero(iou > iou_t)
    matched_t, matched_p = set(), set()
    if len(ti):
        order = np.argsort(-iou[ti, pi])
        for t, p in zip(ti[order], pi[order], strict=True):
            if t in matched_t or p in matched_p:
                continue
            matched_t.add(t)
            matched_p.add(p)
            m[p_cls[p], gt_cls[t]] += 1
    for t, c in enumerate(gt_cls):
        if t not in matched_t:
            m[nc, c] += 1
    for p, c in enumerate(p_cls):
        if p not in matched_p:
            m[c, nc] += 1
    return m


def evaluate_detections(
    predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_classes: int
) -> DetectionMetrics:
    """Score a model from its predictions on a set of images.

    Args:
        predictions: per image, (M, 6) ``[x1, y1, x2, y2, conf, cls]`` normalised to [0, 1].
        truths: per image, (N, 5) ``[cls, x1, y1, x2, y2]`` normalised to [0, 1].
    """
    tps, confs, pcls, tcls = [], [], [], []
    confusion = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    for pred, truth in zip(predictions, truths, strict=True):
        pred = np.asarray(pred, dtype=float).reshape(-1, 6)
        truth = np.asarray(truth, dtype=float).reshape(-1, 5)
        iou = box_iou(truth[:, 1:5], pred[:, :4])
        tps.append(match_predictions(pred[:, 5], truth[:, 0], iou))
        confs.append(pred[:, 4])
        pcls.append(pred[:, 5])
        tcls.append(truth[:, 0])
        confusion += _confusion(pred, truth, n_classes)
    tp = np.concatenate(tps) if tps else np.zeros((0, 10), bool)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pred_cls = np.concatenate(pcls) if pcls else np.zeros(0)
    true_cls = np.concatenate(tcls) if tcls else np.zeros(0)
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    grid = np.linspace(0, 1, 1000)
    ap = np.zeros((n_classes, len(IOU_THRESHOLDS)))
    p_curve = np.zeros((n_classes, len(grid)))
    r_curve = np.zeros((n_classes, len(grid)))
    pr_curves = np.zeros((n_classes, len(grid)))
    n_inst = [int((true_cls == c).sum()) for c in range(n_classes)]
    for c in range(n_classes):
        sel = pred_cls == c
        n_l, n_p = n_inst[c], int(sel.sum())
        if n_p == 0 or n_l == 0:
            continue
        fpc = (1 - tp[sel]).cumsum(0)
        tpc = tp[sel].cumsum(0)
        recall = tpc / (n_l + EPS)
        precision = tpc / (tpc + fpc)
        # Curves against confidence (x = -conf because np.interp needs increasing x).
        r_curve[c] = np.interp(-grid, -conf[sel], recall[:, 0], left=0)
        p_curve[c] = np.interp(-grid, -conf[sel], precision[:, 0], left=1)
        for k in range(len(IOU_THRESHOLDS)):
            ap[c, k], mrec, mpre = _ap(recall[:, k], precision[:, k])
            if k == 0:
                pr_curves[c] = np.interp(grid, mrec, mpre)
    present = [c for c in range(n_classes) if n_inst[c] > 0]
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + EPS)
    best = int(f1[present].mean(0).argmax()) if present else 0

    def mean(a: np.ndarray) -> float:
        return float(a[present].mean()) if present else 0.0

    return DetectionMetrics(
        map50=mean(ap[:, 0]),
        map50_95=mean(ap.mean(1)),
        precision=mean(p_curve[:, best]),
        recall=mean(r_curve[:, best]),
        ap50_per_class=[float(x) for x in ap[:, 0]],
        ap_per_class=[float(x) for x in ap.mean(1)],
        n_images=len(truths),
        n_instances=n_inst,
        confusion=confusion,
        recall_grid=grid,
        precision_curves=pr_curves,
    )


def read_yolo_truth(label_text: str) -> np.ndarray:
    """A standard label file as (N, 5) ``[cls, x1, y1, x2, y2]``."""
    rows = [list(map(float, ln.split())) for ln in label_text.splitlines() if ln.strip()]
    if not rows:
        return np.zeros((0, 5))
    arr = np.array(rows, dtype=float)
    return np.concatenate([arr[:, :1], xywh_to_xyxy(arr[:, 1:5])], axis=1)
