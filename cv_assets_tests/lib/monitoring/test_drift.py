"""Drift detection: calibrated rates over repeated synthetic batches, and the table plumbing."""

import numpy as np
import pandas as pd
import pytest

from cv_assets.lib.ingest.images import image_stats
from cv_assets.lib.ingest.intake import box_features
from cv_assets.lib.monitoring.drift import (
    PRED_COLUMNS,
    DriftSettings,
    compare,
    drift_columns,
    prediction_features,
)
from cv_assets.lib.synth.scenes import parse_shift, render_scene

CLASSES = ["square", "circle", "triangle"]


def scene_features(seed: int, n: int, shift: list[str], size: int = 96) -> pd.DataFrame:
    """Intake's own feature code on scenes from the project's generator (no files needed)."""
    rng, sh = np.random.default_rng(seed), parse_shift(shift)
    rows = []
    for _ in range(n):
        img, boxes = render_scene(rng, size, sh)
        rows.append(image_stats(img) | box_features(boxes, size, size, CLASSES))
    df = pd.DataFrame(rows)
    # Prediction columns the same on both sides: this test calibrates the input features.
    return df.assign(**{c: 0.5 for c in PRED_COLUMNS})


@pytest.mark.slow
def test_drift_flags_few_ordinary_batches_and_almost_every_brighter_one():
    reference = scene_features(1, 600, [])
    cols, settings = drift_columns(CLASSES), DriftSettings()
    trials = 40
    ordinary = sum(
        compare(reference, scene_features(100 + i, 64, []), cols, settings).drifted
        for i in range(trials)
    )
    brighter = sum(
        compare(reference, scene_features(500 + i, 64, ["brightness=0.25"]), cols, settings).drifted
        for i in range(trials)
    )
    assert ordinary / trials <= 0.05, f"{ordinary}/{trials} in-distribution batches flagged"
    assert brighter / trials >= 0.95, f"only {brighter}/{trials} brightened batches flagged"


@pytest.mark.unit
def test_report_names_the_drifted_columns_and_skips_untestable_ones():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300), "c": np.nan})
    cur = pd.DataFrame({"a": rng.normal(size=60) + 1.0, "b": rng.normal(size=60), "c": 1.0})
    r = compare(ref, cur, ["a", "b", "c"], DriftSettings())
    assert set(r.columns) == {"a", "b"}  # c is NaN on the reference side: nothing to test
    assert r.columns["a"]["drifted"] and not r.columns["b"]["drifted"]
    assert r.drifted and r.drift_share == 0.5
    assert "<html" in r.html.lower() and r.report_json


@pytest.mark.unit
def test_prediction_features_summarise_the_champions_confidence():
    dets = [np.array([[0, 0, 1, 1, 0.9, 0], [0, 0, 1, 1, 0.1, 1]]), np.zeros((0, 6))]
    f = prediction_features(dets)
    assert f["pred_count"].tolist() == [1.0, 0.0]
    assert f["pred_conf_mean"].tolist() == [pytest.approx(0.5), 0.0]
