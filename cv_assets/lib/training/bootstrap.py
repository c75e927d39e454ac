"""Paired bootstrap of the difference in mAP between two models scored on the same test images.

A gate that compares two point estimates on 60-500 images cannot tell a real gain from the luck of
the test set. Resampling the images, and scoring both models on the same resample each time, gives
a percentile interval for the challenger-minus-champion difference. Each model's detections are
matched to the ground truth once (``match_detections``); a resample only re-weights images and
recomputes COCO AP (``average_precision``), so 1,000 resamples of 500 images take about a second.
``metric_interval`` resamples the same way for one model alone: how sure a single mAP is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cv_assets.lib.core.metrics import Area, MatchedDetections, average_precision, match_detections

Metric = Literal["map50_95", "map50", "ap_small", "ap_medium", "ap_large"]
SingleMetric = Literal["map50", "map50_95"]
_AREA: dict[str, Area] = {"ap_small": "small", "ap_medium": "medium", "ap_large": "large"}


@dataclass(frozen=True)
class BootstrapResult:
    """Model A minus model B in ``metric``, with a percentile interval over image resamples.

    ``low`` and ``high`` are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    of the resampled differences: ``low > 0`` says A beats B beyond the test set's sampling noise
    at that confidence, ``high < 0`` that B beats A, and an interval containing 0 that the test
    set cannot tell them apart.
    """

    delta: float  # on the full test set: the difference evaluate_detections gives
    low: float
    high: float
    n_images: int
    n_resamples: int  # resamples where the metric is defined (see paired_bootstrap)
    confidence: float
    metric: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IntervalResult:
    """One model's ``metric`` on a set of images, with a percentile interval over image resamples.

    ``low`` and ``high`` are the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of
    the metric on resamples of the images: the range the number could have come out in on another
    set of images drawn the same way.
    """

    value: float  # on the full set: the number evaluate_detections gives
    low: float
    high: float
    n_images: int
    n_resamples: int  # resamples where the metric is defined (see metric_interval)
    confidence: float
    metric: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(matched: MatchedDetections, metric: Metric, weights: np.ndarray | None) -> np.ndarray:
    """The metric of each resample (B,), nan where no class has ground truth counted."""
    ap = average_precision(matched, _AREA.get(metric, "all"), weights)
    ap = ap[None] if weights is None else ap
    per_class = ap[:, :, 0] if metric == "map50" else ap.mean(2)
    present = ~np.isnan(per_class)
    n = present.sum(1)
    total = np.where(present, per_class, 0.0).sum(1)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts of each image in each resample of n images drawn with replacement."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_resamples)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _check_resampling(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} is outside (0, 1)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples {n_resamples} must be at least 1")


def paired_bootstrap(
    preds_a: Sequence[np.ndarray],
    preds_b: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    n_classes: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    image_sizes: Sequence[tuple[float, float]] | None = None,
    metric: Metric = "map50_95",
) -> BootstrapResult:
    """Bootstrap ``metric(A) - metric(B)`` over the test images, both models on each resample.

    Args:
        preds_a: model A's (the challenger's) predictions per image, as ``evaluate_detections``.
        preds_b: model B's (the champion's) predictions on the same images.
        truths: per image, (N, 5) ``[cls, x1, y1, x2, y2]`` normalised to [0, 1].
        n_classes: class ids run 0..n_classes-1.
        n_resamples: resamples of the images, drawn with replacement, each as many as the set.
        confidence: the central share of resampled differences between ``low`` and ``high``.
        seed: the same seed draws the same resamples, so the result is reproducible.
        image_sizes: per image, ``(width, height)`` in model-input pixels; needed for the size
            metrics (``ap_small``, ``ap_medium``, ``ap_large``) and unused by the others.
        metric: COCO mAP50-95 by default, as ``DetectionMetrics`` names it.

    A resample that draws no ground truth counted by the metric (possible only when very few
    images hold any) has no difference and is left out of the interval and of ``n_resamples``.
    """
    if not len(preds_a) == len(preds_b) == len(truths):
        raise ValueError(
            f"paired bootstrap needs both models on the same images: {len(preds_a)} and "
            f"{len(preds_b)} prediction arrays for {len(truths)} images"
        )
    _check_resampling(confidence, n_resamples)
    if metric in _AREA and image_sizes is None:
        raise ValueError(f"metric {metric} needs image_sizes (object areas in model-input pixels)")
    sizes = image_sizes if metric in _AREA else None
    a = match_detections(preds_a, truths, n_classes, image_sizes=sizes)
    b = match_detections(preds_b, truths, n_classes, image_sizes=sizes)
    delta = float(_metric(a, metric, None)[0] - _metric(b, metric, None)[0])
    if np.isnan(delta):
        raise ValueError(f"{metric} is undefined: no object it counts in {len(truths)} image(s)")
    n = len(truths)
    weights = _resample_weights(n, n_resamples, seed)
    deltas = _metric(a, metric, weights) - _metric(b, metric, weights)
    deltas = deltas[~np.isnan(deltas)]
    low, high = _percentiles(deltas, confidence)
    return BootstrapResult(
        delta=delta,
        low=low,
        high=high,
        n_images=n,
        n_resamples=len(deltas),
        confidence=confidence,
        metric=metric,
    )


def metric_interval(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    n_classes: int,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: SingleMetric = "map50",
) -> IntervalResult:
    """Bootstrap one model's ``metric`` over its images: the value and a percentile interval.

    Args:
        preds: the model's predictions per image, as ``evaluate_detections``.
        truths: per image, (N, 5) ``[cls, x1, y1, x2, y2]`` normalised to [0, 1].
        n_classes: class ids run 0..n_classes-1.
        n_resamples: resamples of the images, drawn with replacement, each as many as the set.
        confidence: the central share of resampled values between ``low`` and ``high``.
        seed: the same seed draws the same resamples, so the result is reproducible.
        metric: ``map50`` or ``map50_95``, as ``DetectionMetrics`` names them.

    Resampling is ``paired_bootstrap``'s, so the two agree on what an interval means. A resample
    that draws no ground truth is left out of the interval and of ``n_resamples``.
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} prediction arrays for {len(truths)} images")
    _check_resampling(confidence, n_resamples)
    if metric not in ("map50", "map50_95"):
        raise ValueError(f"metric {metric} has no single-model interval (map50 or map50_95)")
    matched = match_detections(preds, truths, n_classes)
    value = float(_metric(matched, metric, None)[0])
    if np.isnan(value):
        raise ValueError(f"{metric} is undefined: no object it counts in {len(truths)} image(s)")
    n = len(truths)
    values = _metric(matched, metric, _resample_weights(n, n_resamples, seed))
    values = values[~np.isnan(values)]
    low, high = _percentiles(values, confidence)
    return IntervalResult(
        value=value,
        low=low,
        high=high,
        n_images=n,
        n_resamples=len(values),
        confidence=confidence,
        metric=metric,
    )
