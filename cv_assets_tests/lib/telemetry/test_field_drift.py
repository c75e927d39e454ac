"""The simulated fleet's events, and field drift per cohort, with a real hand-made ONNX detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cv_assets.lib.synth.scenes import Shift, render_scene
from cv_assets.lib.telemetry.contract import validate_batch
from cv_assets.lib.telemetry.field_drift import (
    cohort_table,
    device_class,
    events_frame,
    field_drift,
    field_reference,
)
from cv_assets.lib.telemetry.fleet import FAULTS, FleetCohort, malformed_events, simulate_day
from cv_assets_tests.lib.telemetry.detectors import CLASSES, quadrant_detector

pytestmark = pytest.mark.unit

FRAME = 128
MODEL, SHA = "3", "ab" * 32
DARK_MOTO = FleetCohort("Moto G54", Shift(brightness=-0.25))


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return quadrant_detector(tmp_path_factory.mktemp("det") / "quadrants.onnx")


@pytest.fixture(scope="module")
def reference(detector, tmp_path_factory) -> pd.DataFrame:
    """The champion on its test split: 600 unshifted scenes, written losslessly."""
    folder = tmp_path_factory.mktemp("test_split")
    rng = np.random.default_rng(1234)
    paths = []
    for i in range(600):
        img, _ = render_scene(rng, FRAME, Shift())
        img.save(folder / f"{i:04d}.png")
        paths.append(folder / f"{i:04d}.png")
    return field_reference(paths, detector)


@pytest.fixture(scope="module")
def day(detector) -> list[dict]:
    return simulate_day(
        str(detector), MODEL, SHA, "2026-12-01", installs=160, events_per_install=10, seed=7,
        cohorts=[DARK_MOTO], frame_size=FRAME,
    )  # fmt: skip


def test_a_simulated_day_passes_the_contract_with_no_rejection(day):
    accepted, rejected = validate_batch({"schema_version": 1, "events": day}, {MODEL: len(CLASSES)})
    assert rejected == []
    assert len(accepted) == len(day) == 1600
    assert {e["device_model"] for e in day} == {"Pixel 8", "Galaxy S23", "iPhone15,2", "Moto G54"}
    assert {e["app_version"] for e in day} == {"2.14.1", "2.15.0"}
    assert {e["sampling"] for e in day} == {"none", "random", "low_confidence"}
    # A frame is sent only for a sampled event of a consenting install, and some are.
    with_image = [e for e in day if "image" in e]
    assert with_image and all(e["consent_image"] and e["sampling"] != "none" for e in with_image)
    # Detections come from the detector: low-confidence sampling follows the best score.
    for e in day:
        best = max((d["confidence"] for d in e["detections"]), default=0.0)
        assert (e["sampling"] == "low_confidence") == (best < 0.5)


def test_the_darker_cohort_has_darker_frames_measured_as_intake_measures(day):
    bright = pd.DataFrame(
        [{"moto": e["device_model"] == "Moto G54", "b": e["input"]["brightness"]} for e in day]
    ).groupby("moto")["b"].mean()  # fmt: skip
    assert bright[True] < bright[False] - 0.15


def test_each_malformed_event_is_rejected_with_its_reason():
    events = malformed_events(8, seed=3, model_version=MODEL, model_sha256=SHA)
    accepted, rejected = validate_batch({"schema_version": 1, "events": events}, {MODEL: 3})
    assert accepted == []
    assert len(rejected) == 8
    for r in rejected:
        fault = r["event_id"].split("-")[1]
        assert FAULTS[fault] in r["reason"], r
    assert {r["event_id"].split("-")[1] for r in rejected} == set(FAULTS)


def test_device_classes_follow_the_documented_prefixes():
    assert device_class("Pixel 8") == "pixel"
    assert device_class("iPhone15,2") == "iphone"
    assert device_class("Galaxy S23") == device_class("SM-S911B") == "galaxy-s"
    assert device_class("moto g54") == "moto"
    assert device_class("Nokia 3310") == "other"


def test_the_shifted_cohort_is_flagged_and_the_others_are_not(day, reference):
    results = field_drift(events_frame(day), reference, min_events=100)
    assert len(results) == 8  # 4 device classes x 2 app versions, one model
    assert not any(r.skipped for r in results)
    flagged = {r.cohort for r in results if r.drifted}
    assert flagged == {f"model={MODEL} device=moto app={a}" for a in ("2.14.1", "2.15.0")}
    for r in results:
        if r.drifted:
            assert "brightness" in r.columns and r.columns["brightness"] < 1e-3
            assert "brightness" in r.reason and r.reason.startswith(r.cohort)
        else:
            assert r.columns == {} and "no column drifted" in r.reason


def test_cohorts_under_min_events_are_skipped_with_a_reason(day, reference):
    table = cohort_table(events_frame(day))
    iphone = table[table["device_class"] == "iphone"]
    few = pd.DataFrame(pd.concat([table[table["device_class"] != "iphone"], iphone.head(30)]))
    results = {r.cohort: r for r in field_drift(few, reference, min_events=100)}
    small = [r for r in results.values() if r.device_class == "iphone"]
    assert small and all(r.skipped and not r.drifted for r in small)
    assert all("under min_events 100" in r.reason for r in small)
    assert sum(r.n_events for r in small) == 30
    assert all(not r.skipped for r in results.values() if r.device_class != "iphone")


def test_a_day_is_the_same_whatever_the_number_of_worker_processes(detector):
    def run(workers: int) -> list[dict]:
        return simulate_day(
            str(detector), MODEL, SHA, "2026-12-02", installs=6, events_per_install=4, seed=5,
            cohorts=[DARK_MOTO], frame_size=64, workers=workers,
        )  # fmt: skip

    one, two = run(1), run(2)
    assert len(one) == 24 and one == two
    assert len({e["event_id"] for e in one}) == 24
