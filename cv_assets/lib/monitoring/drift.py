"""Drift of a landed batch against the training reference, with Evidently 0.7.

Columns compared: image quality (brightness, contrast, sharpness), boxes (count, mean area,
mean aspect), the class mix (boxes per class), and the champion's view of the images (mean top
confidence and number of confident detections: prediction drift). Each column gets a
Kolmogorov-Smirnov test; a batch is *drifted* when the share of drifted columns reaches
``drift_share``. The defaults are calibrated by a test over repeated synthetic batches.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image

IMAGE_COLUMNS = ["brightness", "contrast", "sharpness"]
BOX_COLUMNS = ["n_boxes", "box_area_mean", "box_aspect_mean"]
PRED_COLUMNS = ["pred_conf_mean", "pred_count"]


@dataclass(frozen=True)
class DriftSettings:
    column_threshold: float = 0.001  # K-S p-value under which one column has drifted
    drift_share: float = 0.05  # share of drifted columns that flags the batch (any one of <= 20)
    max_rows: int = 5000  # each side is sampled down to this many rows


@dataclass
class DriftResult:
    drift_share: float
    drifted: bool
    columns: dict[str, dict[str, Any]]
    reference_rows: int
    current_rows: int
    html: str
    report_json: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "drift_share": self.drift_share,
            "drifted": self.drifted,
            "columns": self.columns,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
        }


def drift_columns(classes: list[str]) -> list[str]:
    return IMAGE_COLUMNS + BOX_COLUMNS + [f"n_{c}" for c in classes] + PRED_COLUMNS


def prediction_features(detections: list[np.ndarray], conf: float = 0.25) -> pd.DataFrame:
    """Per image: the mean top-confidence of the champion's boxes, and how many pass ``conf``."""
    rows = []
    for d in detections:
        scores = d[:, 4] if len(d) else np.zeros(0)
        top = np.sort(scores)[::-1][:10]
        rows.append(
            {
                "pred_conf_mean": float(top.mean()) if len(top) else 0.0,
                "pred_count": float((scores >= conf).sum()),
            }
        )
    return pd.DataFrame(rows, columns=pd.Index(PRED_COLUMNS))


def sample_rows(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` rows, the same ones on every run for the same input."""
    return df if len(df) <= n else df.sample(n=n, random_state=seed)


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    settings: DriftSettings = DriftSettings(),
) -> DriftResult:
    """Run Evidently's drift preset on ``columns`` and read per-column scores back from it."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref = sample_rows(pd.DataFrame(reference[columns]).astype(float), settings.max_rows)
    cur = sample_rows(pd.DataFrame(current[columns]).astype(float), settings.max_rows)
    # A column that is NaN for a whole side (no boxes of a class at all) cannot be tested.
    usable = [c for c in columns if bool(ref[c].notna().any()) and bool(cur[c].notna().any())]
    definition = DataDefinition(numerical_columns=usable)
    report = Report(
        [
            DataDriftPreset(
                columns=usable,
                num_method="ks",
                threshold=settings.column_threshold,
                drift_share=settings.drift_share,
            )
        ]
    )
    # A column that is constant on one side makes Evidently divide 0 by 0 in its summaries.
    with np.errstate(divide="ignore", invalid="ignore"):
        snap = report.run(
            current_data=Dataset.from_pandas(pd.DataFrame(cur[usable]), data_definition=definition),
            reference_data=Dataset.from_pandas(
                pd.DataFrame(ref[usable]), data_definition=definition
            ),
        )
    raw = snap.dict()
    scores = _column_scores(raw, usable)
    cols = {
        c: {"p_value": round(p, 6), "drifted": p < settings.column_threshold}
        for c, p in scores.items()
    }
    share = sum(v["drifted"] for v in cols.values()) / max(len(cols), 1)
    return DriftResult(
        drift_share=round(share, 4),
        drifted=share >= settings.drift_share,
        columns=cols,
        reference_rows=len(ref),
        current_rows=len(cur),
        html=snap.get_html_str(as_iframe=False),
        report_json=json.loads(snap.json()),
    )


def _column_scores(raw: dict[str, Any], columns: list[str]) -> dict[str, float]:
    """The K-S p-value of each column, from the snapshot's ``ValueDrift`` metrics."""
    out: dict[str, float] = {}
    for m in raw.get("metrics", []):
        config = m.get("config") or {}
        col = config.get("column")
        if col in columns and "ValueDrift" in str(config.get("type", m.get("metric_id", ""))):
            value = m.get("value")
            out[col] = float(value) if value is not None and not math.isnan(value) else 1.0
    missing = [c for c in columns if c not in out]
    if missing:
        raise ValueError(f"Evidently's report has no drift score for {missing}")
    return out


def _parquet(store: Any, uri: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(uri))))


def with_predictions(
    store: Any, table: pd.DataFrame, detector_path: str, cache: Any
) -> pd.DataFrame:
    """``table`` (with ``image_uri``) plus the champion's prediction columns for each image."""

    det = OnnxDetector(detector_path)
    dets = [
        det.detect(read_image(local_file(store, u, cache)), conf=0.001) for u in table["image_uri"]
    ]
    preds = prediction_features(dets)
    return pd.concat([table.reset_index(drop=True), preds], axis=1)


def reference_table(store: Any, samples_uri: str, max_rows: int) -> pd.DataFrame:
    """Features of the training split of a dataset version (the champion's), sampled."""
    samples = _parquet(store, samples_uri)
    train = pd.DataFrame(samples[samples["split"] == "train"][["sha256", "image_uri"]])
    frames = [
        _parquet(store, store.uri(f"features/{b}/features.parquet"))
        for b in sorted(samples["batch_id"].unique())
    ]
    feats = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["sha256"])
    return sample_rows(feats.merge(train, on="sha256", how="inner"), max_rows)


def batch_table(store: Any, features_uri: str, samples_uri: str) -> pd.DataFrame:
    """Features of one batch's accepted images, with their standardised image URIs."""
    feats = _parquet(store, features_uri)
    samples = pd.DataFrame(_parquet(store, samples_uri)[["sha256", "image_uri"]])
    return feats.merge(samples.drop_duplicates(subset=["sha256"]), on="sha256", how="inner")


def drift_for_batch(
    store: Any,
    *,
    champion_key: str,
    dataset_version: str,
    detector_uri: str,
    features_uri: str,
    samples_uri: str,
    classes: list[str],
    settings: DriftSettings,
    max_prediction_images: int = 300,
) -> DriftResult:
    """One batch against the champion's training reference (cached per champion in the store)."""

    columns = drift_columns(classes)
    ref_key = layout.drift_reference(champion_key, settings.max_rows)
    with scratch_dir("drift") as tmp:
        cache = Path(tmp)
        detector = str(local_file(store, detector_uri, cache))
        if store.exists(ref_key):
            ref = _parquet(store, store.uri(ref_key))
        else:
            samples = store.uri(layout.dataset_samples(dataset_version))
            ref = reference_table(store, samples, settings.max_rows)
            ref = with_predictions(store, sample_rows(ref, max_prediction_images), detector, cache)
            store.put_bytes(ref_key, _parquet_bytes(ref))
        cur = batch_table(store, features_uri, samples_uri)
        cur = with_predictions(store, sample_rows(cur, max_prediction_images), detector, cache)
    return compare(ref, cur, columns, settings)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
