"""Live accuracy: the app's own detections on labelled audit frames, per model and per cohort."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cv_assets.lib.telemetry.field_drift import cohort_table
from cv_assets.lib.telemetry.live_accuracy import AccuracyRow, LiveAccuracy, live_accuracy
from cv_assets.lib.telemetry.spool import PARQUET_SCHEMA

pytestmark = pytest.mark.unit

N_CLASSES = 3
APP = "1.4.0"
PIXEL = f"model=3 device=pixel app={APP}"
MOTO = f"model=3 device=moto app={APP}"


def scene(rng: np.random.Generator) -> np.ndarray:
    """1-4 objects, [cls, x1, y1, x2, y2] normalised, 10-30% of the frame wide."""
    n = int(rng.integers(1, 5))
    wh = rng.uniform(0.1, 0.3, (n, 2))
    xy = rng.uniform(0, 1 - wh)
    return np.column_stack([rng.integers(0, N_CLASSES, n), xy, xy + wh])


def yolo(truth: np.ndarray) -> str:
    """The label text a person's labelling gives: ``cls cx cy w h`` per line."""
    rows = [(int(c), (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1) for c, x1, y1, x2, y2 in truth]
    return "\n".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}" for c, cx, cy, w, h in rows)


def detections(truth: np.ndarray, conf: float = 0.9) -> list[dict]:
    """What the app sends: each object found exactly."""
    return [
        {"class_id": int(c), "confidence": conf, "box": [float(v) for v in box]}
        for c, *box in truth
    ]


def event(i: int, dets: list[dict], device: str = "Pixel 8", model: str = "3") -> dict:
    """One Parquet row (every column of the schema; the ones scoring ignores left empty)."""
    return {f.name: None for f in PARQUET_SCHEMA} | {
        "event_id": f"ev-{i:03d}",
        "model_version": model,
        "device_model": device,
        "app_version": APP,
        "input_width": 640,
        "input_height": 480,
        "sampling": "audit",
        "n_detections": len(dets),
        "detections": json.dumps(dets),
    }


def audit_day(
    cohorts: list[tuple[str, str, int]], seed: int = 0, miss: frozenset[str] = frozenset()
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Audit events and their labels: ``(device, model, n)`` per cohort; ``miss`` devices'
    detector drops every other object."""
    rng = np.random.default_rng(seed)
    rows, labels = [], {}
    i = 0
    for device, model, n in cohorts:
        for _ in range(n):
            truth = scene(rng)
            found = truth[::2] if device in miss else truth
            rows.append(event(i, detections(found), device, model))
            labels[f"ev-{i:03d}"] = yolo(truth)
            i += 1
    return pd.DataFrame(rows), labels


def by_name(result: LiveAccuracy) -> dict[str, AccuracyRow]:
    return {r.name: r for r in result.rows}


def test_a_perfect_detector_scores_one_everywhere():
    audit, labels = audit_day([("Pixel 8", "3", 40), ("Moto G54", "3", 35)])
    result = live_accuracy(audit, labels, N_CLASSES, n_resamples=200)
    assert [(r.scope, r.name, r.n_images) for r in result.rows] == [
        ("model", "model=3", 75),
        ("cohort", MOTO, 35),
        ("cohort", PIXEL, 40),
    ]
    for r in result.rows:
        assert (r.map50, r.map50_low, r.map50_high) == (1.0, 1.0, 1.0)
        assert r.map50_95 == pytest.approx(1.0) and r.note == "" and r.confidence == 0.95
    assert result.n_audit == result.n_labelled == 75 and result.too_small == []


def test_cohorts_are_named_as_the_field_drift_report_names_them():
    audit, labels = audit_day([("Pixel 8", "3", 30), ("Moto G54", "3", 30)])
    result = live_accuracy(audit, labels, N_CLASSES, n_resamples=50)
    cohorts = {r.name for r in result.rows if r.scope == "cohort"}
    assert cohorts == set(cohort_table(audit)["cohort"]) == {PIXEL, MOTO}


def test_a_cohort_whose_detector_misses_half_the_objects_scores_lower():
    audit, labels = audit_day(
        [("Pixel 8", "3", 60), ("Moto G54", "3", 60)], seed=1, miss=frozenset({"Moto G54"})
    )
    rows = by_name(live_accuracy(audit, labels, N_CLASSES))
    pixel, moto, model = rows[PIXEL], rows[MOTO], rows["model=3"]
    assert pixel.map50 == 1.0 and pixel.map50_low == 1.0
    assert moto.map50 is not None and 0.4 < moto.map50 < 0.7
    assert model.map50 is not None and moto.map50 < model.map50 < 1.0
    # The gap is beyond the sampling noise of 60 frames: the intervals do not overlap.
    assert moto.map50_low is not None and moto.map50_high is not None
    assert moto.map50_low < moto.map50 < moto.map50_high < 1.0


def test_a_cohort_under_min_images_is_listed_as_too_small_and_the_model_row_stays():
    audit, labels = audit_day([("Pixel 8", "3", 40), ("Moto G54", "3", 10), ("Pixel 8", "4", 5)])
    result = live_accuracy(audit, labels, N_CLASSES, min_images=30, n_resamples=100)
    rows = by_name(result)
    assert set(rows) == {"model=3", "model=4", PIXEL}
    assert result.too_small == [(MOTO, 10), ("model=4 device=pixel app=1.4.0", 5)]
    assert rows["model=3"].n_images == 50 and rows["model=3"].map50_low == 1.0
    small = rows["model=4"]
    assert small.n_images == 5 and small.map50 == 1.0
    assert small.map50_low is None and small.map50_high is None
    assert small.note == "too few labelled frames for an interval (5 < 30)"
    record = json.loads(json.dumps(result.as_dict()))
    assert record["too_small"][0] == {"cohort": MOTO, "n_images": 10}
    assert record["n_audit"] == 55 and record["rows"][1]["map50_low"] is None


def test_unlabelled_events_are_not_scored():
    audit, labels = audit_day([("Pixel 8", "3", 60)], seed=2)
    # The last 20 frames are not labelled yet; their detections would all be false positives.
    for i in range(40, 60):
        del labels[f"ev-{i:03d}"]
    wrong = json.dumps([{"class_id": 0, "confidence": 0.99, "box": [0.0, 0.0, 0.05, 0.05]}])
    audit.loc[40:, "detections"] = wrong
    result = live_accuracy(audit, labels, N_CLASSES, n_resamples=100)
    assert result.n_audit == 60 and result.n_labelled == 40
    assert by_name(result)["model=3"].n_images == 40
    assert by_name(result)["model=3"].map50 == 1.0


def test_an_empty_label_is_a_frame_without_objects_where_a_detection_is_a_false_positive():
    audit, labels = audit_day([("Pixel 8", "3", 40)], seed=3)
    empty_quiet = [event(100 + i, []) for i in range(10)]
    fp = [{"class_id": c, "confidence": 0.95, "box": [0.4, 0.4, 0.6, 0.6]} for c in range(3)]
    empty_noisy = [event(200 + i, fp) for i in range(10)]
    extra = {e["event_id"]: "" for e in empty_quiet + empty_noisy}

    quiet = pd.concat([audit, pd.DataFrame(empty_quiet)], ignore_index=True)
    r = by_name(live_accuracy(quiet, labels | extra, N_CLASSES, n_resamples=100))["model=3"]
    assert r.n_images == 50 and r.map50 == 1.0

    noisy = pd.concat([audit, pd.DataFrame(empty_noisy)], ignore_index=True)
    r = by_name(live_accuracy(noisy, labels | extra, N_CLASSES, n_resamples=100))["model=3"]
    assert r.n_images == 50
    # Ten confident false positives per class rank above every true one: precision drops.
    assert r.map50 is not None and r.map50 < 0.9


def test_frames_without_any_labelled_object_have_no_map():
    audit = pd.DataFrame([event(i, []) for i in range(5)])
    labels = {f"ev-{i:03d}": "" for i in range(5)}
    rows = live_accuracy(audit, labels, N_CLASSES, min_images=3).rows
    assert [(r.scope, r.n_images) for r in rows] == [("model", 5), ("cohort", 5)]
    for r in rows:
        assert r.map50 is None and r.map50_low is None and r.map50_95 is None
        assert r.note == "no labelled object in these frames: mAP is undefined"


def test_unreadable_detections_or_labels_raise_naming_the_event():
    audit, labels = audit_day([("Pixel 8", "3", 10)], seed=4)
    broken = audit.copy()
    broken.loc[7, "detections"] = '[{"class_id": 0, "confidence": 0.9, "box": [0.1'
    with pytest.raises(ValueError, match="event ev-007: detections are not valid JSON"):
        live_accuracy(broken, labels, N_CLASSES)
    broken.loc[7, "detections"] = '[{"class_id": 0, "confidence": 0.9, "box": [0.1, 0.1, 0.2]}]'
    with pytest.raises(ValueError, match=r"event ev-007: .*not 4 numbers"):
        live_accuracy(broken, labels, N_CLASSES)
    with pytest.raises(ValueError, match=r"label of event ev-003:1: expected 5 finite numbers"):
        live_accuracy(audit, labels | {"ev-003": "0 0.5 0.5 0.2"}, N_CLASSES)
    with pytest.raises(ValueError, match=r"label of event ev-003:2: class id 5 is outside 0\.\.2"):
        live_accuracy(audit, labels | {"ev-003": "0 .5 .5 .2 .2\n5 .5 .5 .2 .2"}, N_CLASSES)
