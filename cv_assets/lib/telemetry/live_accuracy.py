"""Live accuracy: the on-device model's mAP on audit frames that people labelled.

An *audit* event is a telemetry event that carries a randomly sampled camera frame; once a person
has labelled the frame, the event's own detections can be scored against the label. The scores
are per model version and per cohort (``field_drift``'s cohorts, named as its report names them),
with a bootstrap interval on mAP50 (``training/bootstrap.metric_interval``) so that a difference
between cohorts can be told from the luck of which frames were sampled.

The detections are the app's own, as the phone ran the model: the top-K after NMS at the app's
score threshold. The number is therefore "mAP at the app's operating point", lower than an
evaluation at conf 0.001 of the same model on the same frames (the low-confidence tail that lifts
recall at high recall levels is cut off). That is the point of the measure, not a fault: it is
what users get. Compare it with itself across versions and cohorts, not with offline mAP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from cv_assets.lib.core.metrics import evaluate_detections, read_yolo_truth
from cv_assets.lib.telemetry.field_drift import COHORT_KEYS, cohort_table
from cv_assets.lib.training.bootstrap import metric_interval


@dataclass
class AccuracyRow:
    """One model version's or one cohort's accuracy on its labelled audit frames.

    ``map50_low`` and ``map50_high`` bound mAP50 at ``confidence``; they are None when the row has
    too few frames for an interval (``note`` says so). ``map50`` and ``map50_95`` are None only
    when the frames hold no labelled object, where mAP is undefined.
    """

    scope: Literal["model", "cohort"]
    name: str
    model_version: str
    n_images: int
    map50: float | None
    map50_low: float | None
    map50_high: float | None
    map50_95: float | None
    confidence: float
    note: str = ""


@dataclass
class LiveAccuracy:
    """The rows (model versions first, then cohorts, each sorted by key) and what was left out.

    ``too_small`` holds ``(cohort name, labelled frames)`` for each cohort under ``min_images``.
    """

    rows: list[AccuracyRow]
    too_small: list[tuple[str, int]] = field(default_factory=list)
    n_audit: int = 0  # audit events given
    n_labelled: int = 0  # of those, events with a label (scored)
    min_images: int = 30

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["too_small"] = [{"cohort": c, "n_images": n} for c, n in self.too_small]
        return out


def _predictions(event_id: str, raw: Any, n_classes: int) -> np.ndarray:
    """The event's detections JSON as (M, 6) ``[x1, y1, x2, y2, conf, cls]``."""
    try:
        dets = json.loads(raw) if isinstance(raw, str) else list(raw)
        rows = [[*map(float, d["box"]), float(d["confidence"]), int(d["class_id"])] for d in dets]
        if any(len(r) != 6 for r in rows):
            raise ValueError("a box is not 4 numbers [x1, y1, x2, y2]")
        out = np.array(rows, dtype=float).reshape(-1, 6)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"event {event_id}: detections are not valid JSON detections: {e}") from e
    bad = (out[:, 5] < 0) | (out[:, 5] >= n_classes)
    if bad.any():
        cls = int(out[bad][0, 5])
        raise ValueError(f"event {event_id}: detection class {cls} is outside 0..{n_classes - 1}")
    return out


def _truth(event_id: str, text: str, n_classes: int) -> np.ndarray:
    """The event's YOLO label as (N, 5) ``[cls, x1, y1, x2, y2]``; empty text is no objects."""
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"label of event {event_id}:{i}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise ValueError(f"{where}: {line.strip()!r} is not numbers 'cls cx cy w h'") from None
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{where}: expected 5 finite numbers 'cls cx cy w h', got {line!r}")
        if values[0] != int(values[0]) or not 0 <= values[0] < n_classes:
            raise ValueError(f"{where}: class id {parts[0]} is outside 0..{n_classes - 1}")
    return read_yolo_truth(text)


def _row(
    scope: Literal["model", "cohort"],
    name: str,
    model_version: str,
    preds: list[np.ndarray],
    truths: list[np.ndarray],
    n_classes: int,
    *,
    min_images: int,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> AccuracyRow:
    n = len(truths)
    row = AccuracyRow(scope, name, model_version, n, None, None, None, None, confidence)
    if not any(len(t) for t in truths):
        row.note = "no labelled object in these frames: mAP is undefined"
        return row
    m = evaluate_detections(preds, truths, n_classes)
    row.map50, row.map50_95 = m.map50, m.map50_95
    if n < min_images:
        row.note = f"too few labelled frames for an interval ({n} < {min_images})"
        return row
    r = metric_interval(preds, truths, n_classes, n_resamples, confidence, seed, "map50")
    row.map50_low, row.map50_high = r.low, r.high
    return row


def live_accuracy(
    audit: pd.DataFrame,
    labels: Mapping[str, str],
    n_classes: int,
    *,
    min_images: int = 30,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LiveAccuracy:
    """mAP of the app's own detections on the labelled audit frames, per model and per cohort.

    Args:
        audit: audit events as the telemetry Parquet rows (``spool.PARQUET_SCHEMA``); the
            ``detections`` JSON boxes are ``[x1, y1, x2, y2]`` fractions of the frame.
        labels: ``event_id`` -> YOLO label text (``cls cx cy w h`` per line, normalised). An event
            without an entry is not labelled yet and is not scored; an empty text is a frame
            labelled as holding no object, where any detection is a false positive.
        n_classes: the model's class count; class ids run 0..n_classes-1.
        min_images: a model version under this many labelled frames gets its point values and no
            interval; a cohort under it gets no row and is listed in ``too_small``.
        n_resamples, confidence, seed: the bootstrap's, as ``metric_interval``.

    The detections are what the app kept (top-K at its score threshold), not a re-run of the
    model, so the result is mAP at the app's operating point (see the module docstring).

    Raises:
        ValueError: a labelled event's detections or label cannot be read; the message names the
            event. Both were validated at ingest, so this is a breach of the store's invariant.
    """
    n_audit = len(audit)
    # Events arrive at least once; a repeated event would count its frame twice.
    ids = audit["event_id"].astype(str)
    labelled = pd.DataFrame(audit[ids.isin(list(labels)) & ~ids.duplicated()])
    table = cohort_table(labelled).reset_index(drop=True)
    ids = table["event_id"].astype(str)
    preds = [_predictions(e, d, n_classes) for e, d in zip(ids, table["detections"], strict=True)]
    truths = [_truth(e, labels[e], n_classes) for e in ids]
    kw: dict[str, Any] = dict(
        min_images=min_images, n_resamples=n_resamples, confidence=confidence, seed=seed
    )

    def pick(index: pd.Index) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [preds[i] for i in index], [truths[i] for i in index]

    rows, too_small = [], []
    for version, group in table.groupby("model_version", sort=True):
        v = str(version)
        rows.append(_row("model", f"model={v}", v, *pick(group.index), n_classes, **kw))
    for _, group in table.groupby(list(COHORT_KEYS), sort=True):
        name, v = str(group["cohort"].iloc[0]), str(group["model_version"].iloc[0])
        if len(group) < min_images:
            too_small.append((name, len(group)))
            continue
        rows.append(_row("cohort", name, v, *pick(group.index), n_classes, **kw))
    return LiveAccuracy(rows, too_small, n_audit, len(table), min_images)
