"""Label issues of a batch by confident learning: cleanlab's ObjectLab on the champion's boxes.

For every image, ``cleanlab.object_detection.rank`` compares the label boxes with the champion's
detections, all of them down to ``conf_floor`` and in pixels (cleanlab's similarity is
``0.9 * IoU + 0.1 * exp(-0.1 * centre distance in px)``), and gives per-box quality scores in
[0, 1], lower meaning more likely wrong:

- overlooked, per confident detection that overlaps no label box: ``missing_label``. One that
  only grazes label boxes (IoU < ``iou_match``) counts too, scored by that IoU (< 0.1, as
  cleanlab's own overlooked scores are): in a crowded image a missed object touches its neighbours.
- swap, per label box on which a confident detection of another class lies: ``class_mismatch``.
  It is dropped when a confident detection of the labelled class also matches the box (IoU >=
  0.5): class-aware NMS keeps both, and the champion then vouches for neither.
- badloc, per label box: how well the best same-class detection (down to ``conf_floor``) fits it:
  ``low_iou``. Only a box that a confident same-class detection overlaps (IoU >= ``iou_match``)
  can score below 1: a label on an object the champion barely sees is more often its miss than a
  misplaced box, and a box that merely grazes it is another object's.
- ``extra_label`` (not in cleanlab, which scores a box with no detection on it as clean): a label
  box on which no detection of any class, down to ``conf_floor``, reaches IoU ``iou_match``. Its
  quality is that best IoU over ``iou_match``.

"Confident" is cleanlab's ``high_probability_threshold``, 0.95 on a calibrated probability. A
YOLO score is not calibrated, so the threshold is read on the champion's own calibration for the
batch: an isotonic fit of "matches a same-class label box at IoU >= 0.5" on confidence, and the
lowest confidence at which the fit reaches 0.95 * (1 - 0.05). The labels are mostly right (the
premise of confident learning); the 5% allows for the errors the queue is there to find, which
a perfect champion is "wrong" on. A champion never that reliable gives no confident evidence, so
it queues no flip, missed object or misplaced box: a weak model's mistakes are not label issues.
``conf_min``, when set, replaces the fitted threshold.

A box is an issue when its quality is at most ``max_quality``: 0.5, the IoU-0.5 match of mAP50
for swap and badloc (similarity ~ IoU), while an overlooked box always scores under 0.1 and an
extra label under 0.5 only below half of ``iou_match``. Severity is ``1 - quality``. An image's
quality is cleanlab's aggregate: each subtype's box scores pooled by softmin, then their geometric
mean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cleanlab.internal.constants import ALPHA, EUC_FACTOR
from cleanlab.object_detection import rank

from cv_assets.lib.core.metrics import box_iou

log = logging.getLogger(__name__)

KINDS = ("missing_label", "class_mismatch", "low_iou", "extra_label")
# cleanlab's HIGH_PROBABILITY_THRESHOLD, on the champion's calibration against the labels in hand:
# against labels with a share e of errors, a champion right with probability p shows p * (1 - e).
LABEL_ERRORS = 0.05
HIGH_PROBABILITY = 0.95 * (1 - LABEL_ERRORS)
NEVER = 1.0 + 1e-6  # a threshold no confidence reaches
MATCH_IOU = 0.5  # a detection is right when it meets a same-class label box at this IoU (mAP50)

Box = tuple[float, float, float, float]  # x1, y1, x2, y2, normalised to [0, 1]


@dataclass(frozen=True)
class IssueSettings:
    conf_floor: float = 0.01  # detections below are not evidence at all (cleanlab wants the rest)
    conf_min: float | None = None  # confident from here; None: from the champion's calibration
    max_quality: float = 0.5  # a box at or below this quality is an issue
    iou_match: float = 0.1  # a label box no detection overlaps this much is an extra label


@dataclass(frozen=True)
class Disagreement:
    """One finding in one image. Boxes are normalised xyxy; ``label_line`` counts from 1."""

    kind: str
    score: float  # severity, 1 - cleanlab's quality of the box
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


@dataclass
class BatchIssues:
    quality: np.ndarray  # (N,) cleanlab's label quality of each image
    findings: list[list[Disagreement]]  # per image, the boxes at or below max_quality
    conf_high: float  # the threshold used, on the champion's raw confidence

    @property
    def flagged(self) -> list[int]:
        return [i for i, f in enumerate(self.findings) if f]


def detection_hits(
    truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Every detection's confidence, and whether it matches a label box of its class at IoU >= 0.5
    (greedily, most confident first, each label box once: the mAP50 rule)."""
    confs, hits = [], []
    for t, p in zip(truths, preds, strict=True):
        p = p[np.argsort(-p[:, 4], kind="stable")]
        iou = box_iou(p[:, :4], t[:, 1:5]) * (p[:, 5:6] == t[None, :, 0])
        free = np.ones(len(t), bool)
        for j in range(len(p)):
            cand = np.where(free & (iou[j] >= MATCH_IOU), iou[j], -1.0)
            hit = len(t) > 0 and cand.max() >= 0
            if hit:
                free[int(cand.argmax())] = False
            confs.append(float(p[j, 4]))
            hits.append(hit)
    return np.asarray(confs, dtype=float), np.asarray(hits, dtype=float)


def calibrated_threshold(
    truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], probability: float
) -> float:
    """The lowest confidence at which a detection is right with ``probability``, by an isotonic
    fit of right (``detection_hits``) on confidence; above 1 when none is."""
    from sklearn.isotonic import IsotonicRegression

    conf, hit = detection_hits(truths, preds)
    if not len(conf):
        return NEVER
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(conf, hit)
    ok = fitted.predict(conf) >= probability
    return float(conf[ok].min()) if ok.any() else NEVER


def _auxiliary_inputs(
    truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """cleanlab's per-image inputs (its ``auxiliary_inputs``), in pixels, with its similarity
    ``ALPHA * IoU + (1 - ALPHA) * exp(-EUC_FACTOR * centre distance)``.

    ``min_possible_similarity`` is cleanlab's smallest non-zero similarity in the batch, but never
    above that of two boxes at opposite corners of the largest image: where every box coincides
    (a champion that only draws the whole frame), cleanlab's own value is 1 and would make an
    object with no label box at all look labelled."""
    aux, lowest = [], []
    for t, p, (w, h) in zip(truths, preds, sizes, strict=True):
        scale = np.array([w, h, w, h], dtype=float)
        lab, box = t[:, 1:5] * scale, p[:, :4] * scale
        iou = box_iou(lab, box)
        centre = np.linalg.norm(
            (lab[:, None, :2] + lab[:, None, 2:]) / 2 - (box[None, :, :2] + box[None, :, 2:]) / 2,
            axis=2,
        )
        sim = ALPHA * iou + (1 - ALPHA) * np.exp(-EUC_FACTOR * centre)
        lowest.append(sim[sim > 0].min(initial=1.0))
        aux.append(
            {
                "pred_labels": p[:, 5].astype(int),
                "pred_label_probs": p[:, 4],
                "pred_bboxes": box,
                "lab_labels": t[:, 0].astype(int),
                "lab_bboxes": lab,
                "similarity_matrix": sim,
                "iou_matrix": iou,
            }
        )
    diagonal = max((np.hypot(w, h) for w, h in sizes), default=0.0)
    floor = min([*lowest, (1 - ALPHA) * float(np.exp(-EUC_FACTOR * diagonal))])
    return [a | {"min_possible_similarity": floor} for a in aux]


def _order(pred: np.ndarray) -> np.ndarray:
    """Detections in cleanlab's order: grouped by class, stable within one."""
    return pred[np.argsort(pred[:, 5], kind="stable")]


def _box(row: np.ndarray) -> Box:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def find_label_issues(
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    n_classes: int,
    settings: IssueSettings = IssueSettings(),
) -> BatchIssues:
    """The label issues of a batch, image by image.

    Args:
        truths: per image (L, 5) ``[cls, x1, y1, x2, y2]`` normalised (``read_yolo_truth``).
        preds: per image (M, 6) ``[x1, y1, x2, y2, conf, cls]`` normalised
            (``OnnxDetector.detect``), ideally down to a low confidence.
        sizes: per image (width, height) in pixels.
    """
    truths = [np.asarray(t, dtype=float).reshape(-1, 5) for t in truths]
    preds = [np.asarray(p, dtype=float).reshape(-1, 6) for p in preds]
    preds = [
        _order(p[(p[:, 4] >= settings.conf_floor) & (p[:, 5] >= 0) & (p[:, 5] < n_classes)])
        for p in preds
    ]
    high = settings.conf_min
    if high is None:
        high = calibrated_threshold(truths, preds, HIGH_PROBABILITY)
    if not truths:
        return BatchIssues(np.zeros(0), [], high)
    # cleanlab declares its per-image TypedDict only under TYPE_CHECKING; ours has its keys.
    aux: list[Any] = _auxiliary_inputs(truths, preds, sizes)
    # cleanlab counts "confident" with a strict >, and our thresholds are attained values.
    hi, lo = np.nextafter(high, -np.inf), np.nextafter(settings.conf_floor, -np.inf)
    over = [
        _grazing(t, p, o, high, settings.iou_match)
        for t, p, o in zip(
            truths,
            preds,
            rank.compute_overlooked_box_scores(high_probability_threshold=hi, auxiliary_inputs=aux),
            strict=True,
        )
    ]
    # Two label boxes of different classes on one place are judged by the champion's boxes, as
    # any other, not flagged both for the overlap alone (cleanlab's overlapping_label_check).
    swap = rank.compute_swap_box_scores(
        high_probability_threshold=hi, overlapping_label_check=False, auxiliary_inputs=aux
    )
    # Any box of the label's class may show where the object is (cleanlab's low threshold at the
    # floor), but only an object the champion confidently sees can show the label misplaced.
    badloc = [
        np.where(_confidently_seen(t, p, high, settings.iou_match), b, 1.0)
        for t, p, b in zip(
            truths,
            preds,
            rank.compute_badloc_box_scores(low_probability_threshold=lo, auxiliary_inputs=aux),
            strict=True,
        )
    ]
    extra = [_extra_scores(t, p, settings.iou_match) for t, p in zip(truths, preds, strict=True)]
    pooled = [rank.pool_box_scores_per_image(s) for s in (over, swap, badloc)]
    # cleanlab's get_label_quality_scores: equal weights, geometric mean of the pooled subtypes.
    quality = np.exp(sum(np.log(1e-100 + s) for s in pooled) / 3)
    findings = [
        _image_findings(truths[i], preds[i], over[i], swap[i], badloc[i], extra[i], high, settings)
        for i in range(len(truths))
    ]
    log.info(
        "label issues: confident from %.3g; %d of %d images flagged",
        high,
        sum(bool(f) for f in findings),
        len(truths),
    )
    return BatchIssues(quality, findings, high)


def _grazing(
    truth: np.ndarray, pred: np.ndarray, over: np.ndarray, high: float, iou_match: float
) -> np.ndarray:
    """cleanlab's overlooked scores, and for a confident detection that only grazes label boxes
    (IoU under ``iou_match``; cleanlab skips any overlap), its best IoU: under 0.1 as cleanlab's
    own overlooked scores are. In a crowded image a missed object often touches a labelled one."""
    if not len(pred) or not len(truth):
        return over
    best = box_iou(pred[:, :4], truth[:, 1:5]).max(1)
    graze = np.isnan(over) & (pred[:, 4] >= high) & (best < iou_match)
    return np.where(graze, best, over)


def _confidently_seen(
    truth: np.ndarray, pred: np.ndarray, high: float, iou_match: float
) -> np.ndarray:
    """Per label box, whether a confident detection of its class overlaps it at IoU
    ``iou_match`` or more (less only grazes it: another object's box, in a crowded image)."""
    same = pred[None, :, 5] == truth[:, None, 0]
    sure = (pred[None, :, 4] >= high) & same & (box_iou(truth[:, 1:5], pred[:, :4]) >= iou_match)
    return sure.any(1) if len(pred) else np.zeros(len(truth), bool)


def _extra_scores(truth: np.ndarray, pred: np.ndarray, iou_match: float) -> np.ndarray:
    """Per label box, its best IoU with any detection over ``iou_match``, capped at 1."""
    if not len(pred):
        return np.zeros(len(truth))
    return np.minimum(box_iou(truth[:, 1:5], pred[:, :4]).max(1, initial=0) / iou_match, 1.0)


def _image_findings(
    truth: np.ndarray,
    pred: np.ndarray,
    over: np.ndarray,
    swap: np.ndarray,
    badloc: np.ndarray,
    extra: np.ndarray,
    high: float,
    s: IssueSettings,
) -> list[Disagreement]:
    """One image's boxes at or below ``max_quality``; one finding per label box at most."""
    iou = box_iou(truth[:, 1:5], pred[:, :4])  # (L, M)
    out: list[Disagreement] = []
    for j in np.nonzero(np.nan_to_num(over, nan=1.0) <= s.max_quality)[0]:
        best = float(iou[:, j].max(initial=0))
        out.append(Disagreement("missing_label", 1 - float(over[j]), best, **_pred(pred[j])))
    for i, t in enumerate(truth):
        base = {"label_line": i + 1, "label_class": int(t[0]), "label_box": _box(t[1:5])}
        kinds = [(badloc[i], "low_iou"), (extra[i], "extra_label")]
        # A swap needs the champion to be confident of another class on the box and not of the
        # labelled one: confident of both (class-aware NMS keeps both), it vouches for neither.
        js = _evidence("class_mismatch", t, pred, iou[i], high)
        vouch = (pred[:, 5] == t[0]) & (iou[i] >= MATCH_IOU) & (pred[:, 4] >= high)
        if not vouch.any():
            kinds.append((swap[i], "class_mismatch"))
        # The kind whose evidence is strongest names the finding: a label box gives one item.
        q, kind = min(kinds)
        if q > s.max_quality:
            continue
        j = js if kind == "class_mismatch" else _evidence(kind, t, pred, iou[i], high)
        more = _pred(pred[j]) if j is not None else {}
        seen = float(iou[i, j]) if j is not None else 0.0
        out.append(Disagreement(kind, 1 - float(q), seen, **base, **more))
    return sorted(out, key=Disagreement.sort_key)


def _evidence(
    kind: str, t: np.ndarray, pred: np.ndarray, iou: np.ndarray, high: float
) -> int | None:
    """The detection a reviewer is shown next to a label box's finding, if any."""
    if not len(pred):
        return None
    same = pred[:, 5] == t[0]
    if kind == "class_mismatch":
        score = np.where(~same & (pred[:, 4] >= high), iou, -1.0)
    elif kind == "low_iou":
        score = np.where(same, iou * pred[:, 4], -1.0)
    else:
        score = iou
    j = int(score.argmax())
    return j if score[j] > 0 else None


def _pred(p: np.ndarray) -> dict[str, Any]:
    return {"pred_class": int(p[5]), "pred_conf": float(p[4]), "pred_box": _box(p)}
