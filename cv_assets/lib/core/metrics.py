"""Detection metrics: mAP50, mAP50-95, AP by object size, precision, recall, confusion matrix.

One implementation scores every model format (PyTorch now, ONNX and int8 later) from plain arrays,
so "the same metric code" is literally the same function. Average precision follows the COCO
reference (pycocotools' ``COCOeval``, bbox), and ``cv_assets_tests/lib/core/test_metrics_coco.py``
checks it against that reference:

- per image and class, at most ``max_dets`` detections (100) are kept, highest confidence first;
- at each of ten IoU thresholds (0.50:0.05:0.95), detections take in descending confidence the
  unmatched ground truth of their class with the highest IoU at or above the threshold;
- AP is the precision envelope read at 101 recall points (the first detection reaching each
  recall), averaged; a class without ground truth has no AP and is left out of every mean;
- AP by size reads object areas in the model's input pixels, with COCO's ranges and ignore rules.

Precision and recall are reported at the confidence that maximises mean F1 (as Ultralytics does).
The matching is done once per model (``match_detections``), so a bootstrap only re-weights images
and recomputes AP (``average_precision``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
# COCO's object sizes, in pixels of area: small < 32², medium 32²..96², large > 96². A box exactly
# on a bound belongs to both ranges, as in COCO.
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
EPS = 1e-16

Area = Literal["all", "small", "medium", "large"]


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


def _greedy_match(iou: np.ndarray, gt_ignored: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """COCO's matching in one image: which ground truth each detection takes at each threshold.

    Args:
        iou: (n_det, n_gt) IoU, zero between different classes; rows by descending confidence.
        gt_ignored: (n_gt,) ground truth outside the area range: a detection takes one only when
            no other ground truth is available to it.

    Returns:
        (10, n_det) column of the ground truth taken, or -1; and whether any detection had to
        compete for ground truth (without that, ``gt_ignored`` cannot change the matching).
    """
    n_det, n_gt = iou.shape
    n_t = len(IOU_THRESHOLDS)
    thr = IOU_THRESHOLDS[:, None]
    match = np.full((n_t, n_det), -1)
    if n_det == 0 or n_gt == 0:
        return match, False
    cand = iou >= IOU_THRESHOLDS[0]
    n_row, n_col = cand.sum(1), cand.sum(0)
    only = cand.argmax(1)
    # A detection whose one candidate is wanted by no other detection needs no ordering.
    alone = (n_row == 1) & (n_col[only] == 1)
    d = np.flatnonzero(alone)
    match[:, d] = np.where(iou[d, only[d]] >= thr, only[d], -1)
    contested = np.flatnonzero((n_row > 0) & ~alone)
    if len(contested):
        bonus = 0.0 if gt_ignored is None else np.where(gt_ignored, 0.0, 2.0)
        taken = np.zeros((n_t, n_gt), dtype=bool)
        rows = np.arange(n_t)
        for d in contested:
            key = np.where((iou[d] >= thr) & ~taken, iou[d] + bonus, -1.0)
            g = n_gt - 1 - key[:, ::-1].argmax(1)  # the last of equal IoUs, as COCO's loop takes
            hit = key[rows, g] > 0
            match[hit, d] = g[hit]
            taken[rows[hit], g[hit]] = True
    return match, len(contested) > 0


@dataclass(frozen=True)
class MatchedDetections:
    """A model's detections on a set of images, each matched once to the ground truth.

    Rows are the kept detections (at most ``max_dets`` per image and class) in descending
    confidence, ties in image order, which is the order COCO accumulates them in. ``tp``,
    ``ignored`` and ``n_gt`` are keyed by area range: ``"all"``, and ``"small"``, ``"medium"``,
    ``"large"`` when image sizes were given.
    """

    n_images: int
    n_classes: int
    image: np.ndarray  # (n,) image index
    cls: np.ndarray  # (n,) class id
    conf: np.ndarray  # (n,)
    tp: dict[str, np.ndarray]  # (n, 10) true positive at each IoU threshold
    ignored: dict[str, np.ndarray]  # (n, 10) neither true nor false positive in that range
    n_gt: dict[str, np.ndarray]  # (n_images, n_classes) ground truth counted in that range


def _check_classes(cls: np.ndarray, n_classes: int, what: str, image: int) -> np.ndarray:
    out = cls.astype(int)
    bad = (out < 0) | (out >= n_classes) | (out != cls)
    if bad.any():
        raise ValueError(
            f"image {image}: {what} class id {cls[bad][0]:g} is outside 0..{n_classes - 1}"
        )
    return out


def _first_per_class(cls: np.ndarray, max_dets: int) -> np.ndarray:
    """Mask of the first ``max_dets`` rows of each class (rows already by descending score)."""
    order = np.argsort(cls, kind="stable")
    sorted_cls = cls[order]
    starts = np.flatnonzero(np.r_[True, sorted_cls[1:] != sorted_cls[:-1]])
    group = np.repeat(starts, np.diff(np.r_[starts, len(cls)]))
    keep = np.zeros(len(cls), dtype=bool)
    keep[order] = np.arange(len(cls)) - group < max_dets
    return keep


def match_detections(
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    n_classes: int,
    *,
    image_sizes: Sequence[tuple[float, float]] | None = None,
    max_dets: int = 100,
) -> MatchedDetections:
    """Match every image's detections to its ground truth, COCO-style, once.

    Args:
        predictions: per image, (M, 6) ``[x1, y1, x2, y2, conf, cls]`` normalised to [0, 1].
        truths: per image, (N, 5) ``[cls, x1, y1, x2, y2]`` normalised to [0, 1].
        n_classes: class ids run 0..n_classes-1.
        image_sizes: per image, ``(width, height)`` in the model's input pixels; with them the
            small/medium/large ranges are matched too (a box's area is ``w*W * h*H``).
        max_dets: detections kept per image and class, highest confidence first (COCO: 100).
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction arrays for {len(truths)} images")
    if image_sizes is not None and len(image_sizes) != len(truths):
        raise ValueError(f"image_sizes has {len(image_sizes)} entries for {len(truths)} images")
    n_img, n_t = len(truths), len(IOU_THRESHOLDS)
    preds, gts, matches = [], [], []
    # Images where detections competed for ground truth: matched again per size range.
    contested: list[tuple[np.ndarray, int, int]] = []
    n_det = n_gt = 0
    for i, (pred, truth) in enumerate(zip(predictions, truths, strict=True)):
        pred = np.asarray(pred, dtype=float).reshape(-1, 6)
        truth = np.asarray(truth, dtype=float).reshape(-1, 5)
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        p_cls = _check_classes(pred[:, 5], n_classes, "prediction", i)
        g_cls = _check_classes(truth[:, 0], n_classes, "truth", i)
        if len(pred) > max_dets:
            keep = _first_per_class(p_cls, max_dets)
            pred, p_cls = pred[keep], p_cls[keep]
        iou = box_iou(pred[:, :4], truth[:, 1:5]) * (p_cls[:, None] == g_cls[None, :])
        match, competed = _greedy_match(iou)
        matches.append(np.where(match >= 0, match + n_gt, -1))
        if competed:
            contested.append((iou, n_det, n_gt))
        preds.append(pred)
        gts.append(truth)
        n_det += len(pred)
        n_gt += len(truth)

    pred = np.concatenate(preds) if preds else np.zeros((0, 6))
    truth = np.concatenate(gts) if gts else np.zeros((0, 5))
    match = np.concatenate(matches, axis=1) if matches else np.zeros((n_t, 0), dtype=int)
    det_img = np.repeat(np.arange(n_img), [len(p) for p in preds])
    gt_img = np.repeat(np.arange(n_img), [len(t) for t in gts])
    gt_key = gt_img * n_classes + truth[:, 0].astype(int)

    def count(in_range: np.ndarray) -> np.ndarray:
        n = np.bincount(gt_key[in_range], minlength=n_img * n_classes)
        return n.reshape(n_img, n_classes)

    order = np.argsort(-pred[:, 4], kind="stable")
    tp = {"all": (match >= 0).T[order]}
    ignored = {"all": np.zeros((n_det, n_t), dtype=bool)}
    counts = {"all": count(np.ones(n_gt, dtype=bool))}
    if image_sizes is not None:
        size = np.asarray(image_sizes, dtype=float).reshape(n_img, 2)
        gw, gh = size[gt_img, 0], size[gt_img, 1]
        dw, dh = size[det_img, 0], size[det_img, 1]
        gt_area = (truth[:, 3] - truth[:, 1]) * gw * ((truth[:, 4] - truth[:, 2]) * gh)
        det_area = (pred[:, 2] - pred[:, 0]) * dw * ((pred[:, 3] - pred[:, 1]) * dh)
        for name, (lo, hi) in SIZE_RANGES.items():
            gt_out = (gt_area < lo) | (gt_area > hi)
            m = match.copy()
            for iou, d0, g0 in contested:
                out = gt_out[g0 : g0 + iou.shape[1]]
                # Preferring in-range ground truth changes nothing when all or none are in range.
                if 0 < out.sum() < len(out):
                    mi = _greedy_match(iou, out)[0]
                    m[:, d0 : d0 + len(iou)] = np.where(mi >= 0, mi + g0, -1)
            took_out = np.append(gt_out, False)[m]  # m == -1 reads the appended False
            unmatched_out = (m < 0) & ((det_area < lo) | (det_area > hi))
            tp[name] = ((m >= 0) & ~took_out).T[order]
            ignored[name] = (took_out | unmatched_out).T[order]
            counts[name] = count(~gt_out)
    return MatchedDetections(
        n_images=n_img,
        n_classes=n_classes,
        image=det_img[order],
        cls=pred[order, 5].astype(int),
        conf=pred[order, 4],
        tp=tp,
        ignored=ignored,
        n_gt=counts,
    )


def _first_reaching(n_pos: np.ndarray) -> np.ndarray:
    """(B, 101): for each resample's ground-truth count, the true positives each recall point needs.

    The recall is computed as COCO does (``tp / n_pos`` in float64), so a recall point that falls
    exactly on a recall the detections reach agrees with the reference.
    """
    need = np.zeros((len(n_pos), len(RECALL_THRESHOLDS)), dtype=np.int64)
    for n in np.unique(n_pos[n_pos > 0]):
        k = np.searchsorted(np.arange(n + 1) / n, RECALL_THRESHOLDS, side="left")
        need[n_pos == n] = k
    return need


def _class_ap(
    tp: np.ndarray, counted: np.ndarray, w: np.ndarray, n_pos: np.ndarray, need: np.ndarray
) -> np.ndarray:
    """AP (B, 10) of one class from its detections in descending confidence.

    ``tp`` and ``counted`` (not ignored) are (n, 10); ``w`` (B, n) is how often each detection's
    image is in each resample; ``n_pos`` (B,) the ground truth counted there and ``need`` (B, 101)
    the true positives each recall point needs. COCO reads the precision envelope at the first
    detection reaching each recall point. A weight repeats a detection in the sequence, which
    leaves that envelope unchanged, and only true positives need reading: a false positive never
    raises the envelope above the true positive before it.
    """
    n_b, n_t = len(w), tp.shape[1]
    out = np.full((n_b, n_t), np.nan)
    scored = n_pos > 0
    if not scored.any():
        return out
    hits = tp.any(1)
    # tp + fp: both integer-valued, so this sum is the exact float COCO divides by.
    if counted.all():
        seen = np.cumsum(w, axis=1)[:, None, hits]
    else:
        seen = np.cumsum(w[:, None, :] * counted.T, axis=2)[:, :, hits]
    tp_sum = np.cumsum(w[:, None, hits] * tp[hits].T, axis=2)  # (B, 10, h)
    precision = tp_sum / (seen + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]
    # The first row reaching each recall point's count, for every (resample, threshold) row at
    # once: each row is offset into its own band of one sorted array. The counts are integers,
    # so the offsets keep every comparison exact.
    n_rows, h = n_b * n_t, tp_sum.shape[2]
    band = (np.arange(n_rows) * (n_pos.max() + 1.0)).reshape(n_b, n_t, 1)
    first = np.searchsorted((tp_sum + band).ravel(), (need[:, None, :] + band).ravel())
    first = first.reshape(n_b, n_t, -1) - (np.arange(n_rows) * h).reshape(n_b, n_t, 1)
    # Past the last row (a recall never reached) reads the appended 0.
    envelope = np.concatenate([envelope, np.zeros((n_b, n_t, 1))], axis=2)
    ap = np.take_along_axis(envelope, first, axis=2).mean(2)
    out[scored] = ap[scored]
    return out


def average_precision(
    matched: MatchedDetections, area: Area = "all", weights: np.ndarray | None = None
) -> np.ndarray:
    """COCO AP per class and IoU threshold, nan for a class with no ground truth counted.

    Args:
        matched: from ``match_detections``.
        area: ``"all"``, or a size range (needs ``image_sizes`` at matching).
        weights: (B, n_images) integer counts of each image in each of B resamples; ``None``
            scores the set once.

    Returns:
        (n_classes, 10) without weights, else (B, n_classes, 10).
    """
    if area not in matched.tp:
        raise ValueError(f"area {area!r} was not matched: pass image_sizes to match_detections")
    # Integer counts: the sums stay exact, and numpy's integer matmul spins up no BLAS threads.
    w_all = np.ones((1, matched.n_images), np.int64) if weights is None else np.asarray(weights)
    w_all = w_all.astype(np.int64, copy=False)
    tp, counted = matched.tp[area], ~matched.ignored[area]
    n_b, n_t = len(w_all), len(IOU_THRESHOLDS)
    out = np.full((n_b, matched.n_classes, n_t), np.nan)
    for c in range(matched.n_classes):
        sel = np.flatnonzero(matched.cls == c)
        # Detections neither true nor false positive (ignored) leave every sum unchanged.
        sel = sel[counted[sel].any(1)]
        n_pos = w_all @ matched.n_gt[area][:, c]
        need = _first_reaching(n_pos)
        # Chunks of resamples keep the (chunk, 10, detections) work arrays in cache.
        step = max(1, 200_000 // max(1, len(sel) * n_t))
        for s in range(0, n_b, step):
            w = w_all[s : s + step][:, matched.image[sel]]
            chunk = slice(s, s + step)
            out[chunk, c] = _class_ap(tp[sel], counted[sel], w, n_pos[chunk], need[chunk])
    return out[0] if weights is None else out


def _pr_envelope(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The precision envelope closed at recall 0 and 1, for plotting the PR curve."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    return mrec, np.flip(np.maximum.accumulate(np.flip(mpre)))


@dataclass
class DetectionMetrics:
    map50: float
    map50_95: float
    precision: float
    recall: float
    ap50_per_class: list[float]  # 0.0 for a class with no ground truth
    ap_per_class: list[float]  # AP50-95 per class
    n_images: int
    n_instances: list[int]
    confusion: np.ndarray  # (nc+1, nc+1): rows predicted, cols true; last = background
    recall_grid: np.ndarray = field(repr=False)
    precision_curves: np.ndarray = field(repr=False)  # (nc, len(recall_grid)) at IoU 0.5
    # COCO's mAP50-95 by object size; None without image sizes or without ground truth that size.
    ap_small: float | None = None
    ap_medium: float | None = None
    ap_large: float | None = None

    def summary(self, classes: Sequence[str]) -> dict[str, Any]:
        """Rounded numbers for records and MLflow; a size AP that is None is left out."""
        out: dict[str, Any] = {
            "map50": round(self.map50, 4),
            "map50_95": round(self.map50_95, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "n_images": self.n_images,
        }
        sizes = {"ap_small": self.ap_small, "ap_medium": self.ap_medium, "ap_large": self.ap_large}
        out |= {k: round(v, 4) for k, v in sizes.items() if v is not None}
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
    predictions: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    n_classes: int,
    *,
    image_sizes: Sequence[tuple[float, float]] | None = None,
    max_dets: int = 100,
) -> DetectionMetrics:
    """Score a model from its predictions on a set of images.

    Args:
        predictions: per image, (M, 6) ``[x1, y1, x2, y2, conf, cls]`` normalised to [0, 1].
        truths: per image, (N, 5) ``[cls, x1, y1, x2, y2]`` normalised to [0, 1].
        n_classes: class ids run 0..n_classes-1.
        image_sizes: per image, ``(width, height)`` in the model's input pixels. With them, AP by
            object size (``ap_small``, ``ap_medium``, ``ap_large``) is computed; without, not.
        max_dets: detections kept per image and class, highest confidence first (COCO: 100).
    """
    matched = match_detections(
        predictions, truths, n_classes, image_sizes=image_sizes, max_dets=max_dets
    )
    confusion = np.zeros((n_classes + 1, n_classes + 1), dtype=np.int64)
    for pred, truth in zip(predictions, truths, strict=True):
        pred = np.asarray(pred, dtype=float).reshape(-1, 6)
        truth = np.asarray(truth, dtype=float).reshape(-1, 5)
        confusion += _confusion(pred, truth, n_classes)

    ap = average_precision(matched)
    present = ~np.isnan(ap[:, 0])
    n_inst = [int(n) for n in matched.n_gt["all"].sum(0)]

    # Precision and recall against confidence at IoU 0.5, and the PR curve for the plot.
    tp, conf, pred_cls = matched.tp["all"][:, 0], matched.conf, matched.cls
    grid = np.linspace(0, 1, 1000)
    p_curve = np.zeros((n_classes, len(grid)))
    r_curve = np.zeros((n_classes, len(grid)))
    pr_curves = np.zeros((n_classes, len(grid)))
    for c in np.flatnonzero(present):
        sel = pred_cls == c
        if not sel.any():
            continue
        tpc = tp[sel].cumsum()
        recall = tpc / n_inst[c]
        precision = tpc / np.arange(1, len(tpc) + 1)
        # x = -conf because np.interp needs increasing x.
        r_curve[c] = np.interp(-grid, -conf[sel], recall, left=0)
        p_curve[c] = np.interp(-grid, -conf[sel], precision, left=1)
        pr_curves[c] = np.interp(grid, *_pr_envelope(recall, precision))
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + EPS)
    best = int(f1[present].mean(0).argmax()) if present.any() else 0

    def mean(a: np.ndarray) -> float:
        return float(a[present].mean()) if present.any() else 0.0

    def size_ap(area: Area) -> float | None:
        if area not in matched.tp:
            return None
        a = average_precision(matched, area)
        has = ~np.isnan(a[:, 0])
        return float(a[has].mean()) if has.any() else None

    return DetectionMetrics(
        map50=mean(ap[:, 0]),
        map50_95=mean(ap.mean(1)),
        precision=mean(p_curve[:, best]),
        recall=mean(r_curve[:, best]),
        ap50_per_class=[float(x) for x in np.nan_to_num(ap[:, 0])],
        ap_per_class=[float(x) for x in np.nan_to_num(ap.mean(1))],
        n_images=len(truths),
        n_instances=n_inst,
        confusion=confusion,
        recall_grid=grid,
        precision_curves=pr_curves,
        ap_small=size_ap("small"),
        ap_medium=size_ap("medium"),
        ap_large=size_ap("large"),
    )


def read_yolo_truth(label_text: str) -> np.ndarray:
    """A standard label file as (N, 5) ``[cls, x1, y1, x2, y2]``."""
    rows = [list(map(float, ln.split())) for ln in label_text.splitlines() if ln.strip()]
    if not rows:
        return np.zeros((0, 5))
    arr = np.array(rows, dtype=float)
    return np.concatenate([arr[:, :1], xywh_to_xyxy(arr[:, 1:5])], axis=1)
