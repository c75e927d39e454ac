"""Field drift: the phones' telemetry, cohort by cohort, against the champion's own test split.

A *cohort* is ``(model_version, device_class, app_version)``; the device class comes from the
device model by :data:`DEVICE_CLASSES` (first matching prefix, case-insensitive; an unknown
model is ``other``), so a camera or ISP that differs between phone families shows as its own
cohort. Each cohort's events are compared with a reference made by running the champion on its
test-split images (``field_reference``), on the *field columns*: image quality (brightness,
contrast, sharpness, measured as intake measures them) and the model's view (number of
detections, max and mean confidence, the share of each class among the detections).

The test is the batch drift report's, reused: ``lib/monitoring/drift.compare`` (Evidently 0.7's
DataDriftPreset, a K-S test per column at p < 0.001; a cohort is drifted when any column drifts).
Each side is sampled to ``DriftSettings.max_rows`` rows before anything per-row (the detections'
JSON) is parsed, so a day of a million events costs the same per cohort as a day of thousands.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image
from cv_assets.lib.ingest.images import image_stats
from cv_assets.lib.monitoring.drift import DriftSettings, compare, sample_rows
from cv_assets.lib.telemetry.spool import flat_row

log = logging.getLogger(__name__)

# (prefix of device_model, device class), first match wins: phone families share camera and ISP.
DEVICE_CLASSES: tuple[tuple[str, str], ...] = (
    ("iPhone", "iphone"),
    ("iPad", "ipad"),
    ("Pixel", "pixel"),
    ("Galaxy S", "galaxy-s"),
    ("SM-S", "galaxy-s"),
    ("Galaxy A", "galaxy-a"),
    ("SM-A", "galaxy-a"),
    ("Moto", "moto"),
)
OTHER = "other"
COHORT_KEYS = ("model_version", "device_class", "app_version")
BASE_COLUMNS = [
    "brightness",
    "contrast",
    "sharpness",
    "n_detections",
    "max_confidence",
    "mean_confidence",
]


def field_columns(classes: Sequence[str]) -> list[str]:
    """The compared columns: :data:`BASE_COLUMNS` and ``share_<class>`` for each class."""
    return BASE_COLUMNS + [f"share_{c}" for c in classes]


def reference_classes(reference: pd.DataFrame) -> list[str]:
    """The class names a reference table was built with (its ``share_*`` columns, in order)."""
    return [str(c)[6:] for c in reference.columns if str(c).startswith("share_")]


def device_class(model: str, classes: Sequence[tuple[str, str]] = DEVICE_CLASSES) -> str:
    """The device class of a ``device_model`` (``Pixel 8`` -> ``pixel``); ``other`` if unknown."""
    low = model.lower()
    return next((c for prefix, c in classes if low.startswith(prefix.lower())), OTHER)


def events_frame(events: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Accepted events as the rows the spool writes to Parquet (``spool.flat_row``)."""
    return pd.DataFrame([flat_row(e, 0.0) for e in events])


def cohort_table(
    events: pd.DataFrame, classes: Sequence[tuple[str, str]] = DEVICE_CLASSES
) -> pd.DataFrame:
    """``events`` (the Parquet rows) plus ``device_class`` and ``cohort``, a readable key.

    The device class is looked up once per distinct model, so a million rows cost little.
    """
    out = events.copy()
    models = pd.Series(out["device_model"].astype(str))
    lookup = {m: device_class(m, classes) for m in models.unique()}
    out["device_class"] = models.map(lookup)
    out["cohort"] = (
        "model="
        + out["model_version"].astype(str)
        + " device="
        + out["device_class"]
        + " app="
        + out["app_version"].astype(str)
    )
    return out


def _shares(class_ids: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    """Per row, the share of its detections in each class (all 0 for a row without any)."""
    out = np.zeros((len(class_ids), n_classes))
    for i, ids in enumerate(class_ids):
        if len(ids):
            counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=n_classes)
            out[i] = counts[:n_classes] / len(ids)
    return out


def _features(
    stats: Mapping[str, Sequence[float] | np.ndarray],
    confidences: Sequence[Sequence[float]],
    class_ids: Sequence[Sequence[int]],
    classes: Sequence[str],
) -> pd.DataFrame:
    """The field columns; confidences are 0 for a frame where nothing was detected."""
    n = np.array([len(c) for c in confidences], dtype=float)
    best = np.array([max(c) if len(c) else 0.0 for c in confidences], dtype=float)
    mean = np.array([sum(c) / len(c) if len(c) else 0.0 for c in confidences], dtype=float)
    shares = _shares(class_ids, len(classes))
    cols: dict[str, Any] = {k: np.asarray(stats[k], dtype=float) for k in BASE_COLUMNS[:3]}
    cols |= {"n_detections": n, "max_confidence": best, "mean_confidence": mean}
    cols |= {f"share_{c}": shares[:, j] for j, c in enumerate(classes)}
    return pd.DataFrame(cols, columns=pd.Index(field_columns(classes)))


def field_features(events: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """The field columns of Parquet event rows (``input_*`` and the ``detections`` JSON)."""
    dets = [json.loads(d) if isinstance(d, str) else list(d) for d in events["detections"]]
    stats = {k: events[f"input_{k}"].to_numpy(dtype=float) for k in BASE_COLUMNS[:3]}
    return _features(
        stats,
        [[float(x["confidence"]) for x in d] for d in dets],
        [[int(x["class_id"]) for x in d] for d in dets],
        classes,
    )


def field_reference(
    image_paths: Sequence[str | Path],
    detector_path: str | Path,
    *,
    conf: float = 0.25,
    top_k: int = 10,
) -> pd.DataFrame:
    """The champion's view of its own test-split images: one row of field columns per image.

    ``conf`` and ``top_k`` must be what the app uses, so that the detections compare with the
    field's. The images should be what a phone's camera gives: a dataset re-encoded as JPEG
    measures as a little less sharp than a raw frame, and the K-S test sees it.
    """
    det = OnnxDetector(detector_path)
    classes = det.class_names
    stats: dict[str, list[float]] = {k: [] for k in BASE_COLUMNS[:3]}
    confs, ids = [], []
    for p in image_paths:
        with Image.open(p) as img:
            for k, v in image_stats(img.convert("RGB")).items():
                stats[k].append(v)
        raw = det.detect(read_image(p), conf=conf, max_det=top_k)
        confs.append(raw[:, 4].astype(float).tolist())
        ids.append(raw[:, 5].astype(int).tolist())
    return _features(stats, confs, ids, classes)


@dataclass
class CohortDrift:
    """One cohort's verdict; ``columns`` holds the drifted columns and their K-S p-values."""

    cohort: str
    model_version: str
    device_class: str
    app_version: str
    n_events: int
    drifted: bool
    drift_share: float
    columns: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    skipped: bool = False


def field_drift(
    events: pd.DataFrame,
    reference: pd.DataFrame,
    *,
    min_events: int = 200,
    settings: DriftSettings | None = None,
    device_classes: Sequence[tuple[str, str]] = DEVICE_CLASSES,
    seed: int = 0,
) -> list[CohortDrift]:
    """Each cohort of ``events`` (the Parquet rows) against ``reference`` (``field_reference``).

    A cohort with fewer than ``min_events`` events is skipped, with the reason. Cohorts come back
    sorted by their key.
    """
    settings = settings or DriftSettings()
    classes = reference_classes(reference)
    columns = field_columns(classes)
    ref = sample_rows(pd.DataFrame(reference[columns]), settings.max_rows, seed)
    table = cohort_table(events, device_classes)
    out = []
    for _, rows in table.groupby(list(COHORT_KEYS), sort=True):
        model, dclass, app = (str(rows[k].iloc[0]) for k in COHORT_KEYS)
        name = str(rows["cohort"].iloc[0])
        n = len(rows)
        if n < min_events:
            out.append(
                CohortDrift(
                    name,
                    model,
                    dclass,
                    app,
                    n,
                    False,
                    0.0,
                    reason=f"{name}: skipped, {n} events is under min_events {min_events}",
                    skipped=True,
                )
            )
            continue
        cur = field_features(sample_rows(pd.DataFrame(rows), settings.max_rows, seed), classes)
        result = compare(ref, cur, columns, settings)
        drifted = {c: v["p_value"] for c, v in result.columns.items() if v["drifted"]}
        if result.drifted:
            named = ", ".join(f"{c} (p={p:.2g})" for c, p in sorted(drifted.items()))
            reason = f"{name}: drifted in {len(drifted)} of {len(result.columns)} columns: {named}"
        else:
            reason = f"{name}: no column drifted (K-S p >= {settings.column_threshold})"
        log.info(reason)
        out.append(
            CohortDrift(
                name, model, dclass, app, n, result.drifted, result.drift_share, drifted, reason
            )
        )
    return out
