"""Issue 19: field drift per cohort of the phones' telemetry.

``field_drift_detection``: 20 simulated days (different seeds) of 1,600 events each, from the
simulated fleet running a real ONNX detector (the hand-made quadrant detector of the tests: an
untrained YOLO scores every frame alike) on 128 px synthetic frames. On every day the Moto G54
installs get frames 0.25 of full scale darker. The reference is the detector on 600 unshifted
scenes. Goals: the darker cohorts are flagged on >= 95 % of days, the in-distribution cohorts on
<= 5 % of cohort-days.

``field_drift_million_events``: ``field_drift`` on a day of 1,000,000 Parquet-shaped event rows
synthesized from distributions (not by running the detector a million times), 2 models x 5 device
families x 3 app versions = 30 cohorts, one of them darker. Wall time of the call, and the peak of
Python allocations during it (tracemalloc, a second run), excluding the table itself.
"""

from __future__ import annotations

import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import QUICK, Result
from cv_assets.lib.synth.scenes import Shift, render_scene
from cv_assets.lib.telemetry.field_drift import (
    events_frame,
    field_drift,
    field_features,
    field_reference,
)
from cv_assets.lib.telemetry.fleet import FleetCohort, simulate_day
from cv_assets_tests.lib.telemetry.detectors import CLASSES, quadrant_detector

FRAME = 128
DAYS = 5 if QUICK else 20
DARK = FleetCohort("Moto G54", Shift(brightness=-0.25))


def field_drift_detection() -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        det = quadrant_detector(Path(tmp) / "quadrants.onnx")
        rng = np.random.default_rng(19)
        paths = []
        for i in range(600):
            path = Path(tmp) / f"{i:04d}.png"
            render_scene(rng, FRAME, Shift())[0].save(path)
            paths.append(path)
        ref = field_reference(paths, det)
        shifted_hits, shifted_n, clean_hits, clean_n = 0, 0, 0, 0
        t0 = time.perf_counter()
        for seed in range(DAYS):
            day = simulate_day(
                str(det), "3", "ab" * 32, f"2026-12-{seed + 1:02d}", installs=160,
                events_per_install=10, seed=seed, cohorts=[DARK], frame_size=FRAME,
            )  # fmt: skip
            for r in field_drift(events_frame(day), ref, min_events=100):
                if r.skipped:
                    continue
                if r.device_class == "moto":
                    shifted_n, shifted_hits = shifted_n + 1, shifted_hits + r.drifted
                else:
                    clean_n, clean_hits = clean_n + 1, clean_hits + r.drifted
        per_day = (time.perf_counter() - t0) / DAYS
    hit = 100 * shifted_hits / max(shifted_n, 1)
    false = 100 * clean_hits / max(clean_n, 1)
    return Result(
        "field_drift_detection",
        19,
        f"share of {shifted_n} darker-cohort-days (Moto G54, brightness -0.25) flagged over "
        f"{DAYS} simulated days of 1,600 events (a real ONNX detector on 128 px synthetic frames)",
        round(hit, 1),
        "%",
        ">= 95 % flagged, <= 5 % of clean cohort-days",
        hit >= 95 and false <= 5,
        f"in-distribution cohort-days flagged: {clean_hits} of {clean_n} ({false:.1f} %); "
        f"simulate + drift {per_day:.1f} s per day",
    )


def _million_table(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` event rows and a 5,000-row reference drawn from the same distributions, except that
    the Moto G54 rows of model 4, app 2.15.0 are 0.1 darker.

    A row's detections are one of five JSON strings (0..4 boxes of classes 0, 1, 2, 0, at
    confidence 0.7), shared between rows as a reader's strings would not be: the drift only reads
    the sampled rows' confidences and classes, and the table stays small enough to hold. The
    reference goes through the same ``field_features`` as the events, as the champion's would.
    """
    rng = np.random.default_rng(seed)
    templates = np.array(
        [
            json.dumps([{"class_id": j % 3, "confidence": 0.7, "box": [0.1, 0.1, 0.3, 0.3]}
                        for j in range(i)])
            for i in range(5)
        ],
        dtype=object,
    )  # fmt: skip
    devices = np.array(["Pixel 8", "Galaxy S23", "iPhone15,2", "Moto G54", "Nokia X20"])
    models, apps = np.array(["3", "4"]), np.array(["2.14.1", "2.15.0", "2.16.0"])

    def rows(m: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "device_model": devices[rng.integers(0, 5, m)],
                "model_version": models[rng.integers(0, 2, m)],
                "app_version": apps[rng.integers(0, 3, m)],
                "input_brightness": np.clip(rng.normal(0.48, 0.07, m), 0, 1),
                "input_contrast": np.abs(rng.normal(0.18, 0.04, m)),
                "input_sharpness": rng.lognormal(-3.3, 0.4, m),
                "detections": templates[rng.integers(0, 5, m)],
            }
        )

    ref = field_features(rows(5000), CLASSES)
    table = rows(n)
    dark = (
        (table["device_model"] == "Moto G54")
        & (table["model_version"] == "4")
        & (table["app_version"] == "2.15.0")
    )
    table.loc[dark, "input_brightness"] -= 0.1
    return table, ref


def field_drift_million_events() -> Result:
    n = 100_000 if QUICK else 1_000_000
    table, ref = _million_table(n, 19)
    t0 = time.perf_counter()
    results = field_drift(table, ref)
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    field_drift(table, ref)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    flagged = sorted(r.cohort for r in results if r.drifted)
    return Result(
        "field_drift_million_events",
        19,
        f"field_drift on a day of {n:,} event rows (synthesized), {len(results)} cohorts, each "
        "side sampled to 5,000 rows",
        round(seconds, 1),
        "s",
        "<= 60 s",
        seconds <= 60,
        f"peak Python allocations during the call {peak:.0f} MiB (tracemalloc; the table itself "
        f"excluded); flagged: {', '.join(flagged) or 'none'} (the darker cohort is "
        "model=4 device=moto app=2.15.0)",
    )


BENCHMARKS = [field_drift_detection, field_drift_million_events]
