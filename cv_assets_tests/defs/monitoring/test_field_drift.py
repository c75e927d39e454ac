"""field_drift on a real instance: a simulated fleet's day goes through the real spool into the
store, the darker cohort is flagged against the champion, and a flagged day retrains once."""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.automation.sensors import field_drift_sensor
from cv_assets.lib.synth.scenes import Shift
from cv_assets.lib.telemetry.fleet import FleetCohort, simulate_day
from cv_assets.resources.environment import platform_resources
from cv_assets.resources.storage import PlatformSettings
from cv_assets_tests.support.field import store_events, trained_champion
from cv_assets_tests.support.jobs import QUIET, materialized, train

pytestmark = pytest.mark.slow

DAY = "2026-11-30"


def test_a_darker_cohort_of_a_days_traffic_is_flagged_and_retrains_once(small_home, instance):
    cfg = small_home
    champ, store, onnx = trained_champion(cfg, instance)
    # One day of a fleet running the champion's own file: 96 px frames like its test split; the
    # Moto installs' frames are darker.
    events = simulate_day(
        str(onnx), champ.version, champ.weights_sha256, DAY, installs=120, events_per_install=10,
        seed=3, cohorts=[FleetCohort("Moto G54", Shift(brightness=-0.3))], frame_size=96,
        workers=2,
    )  # fmt: skip
    store_events(cfg, store, events, champ.version)

    job = build_defs(cfg).resolve_job_def("field_monitoring_job")
    # About 150 events per cohort (4 device classes x 2 app versions): judge cohorts from 60.
    rc = QUIET | {"ops": {"field_drift": {"config": {"min_events": 60}}}}
    run = job.execute_in_process(partition_key=DAY, instance=instance, run_config=rc)
    assert run.success
    meta = materialized(run, "field_drift")
    assert meta is not None and meta["n_events"] == len(events)
    assert meta["drifted"] is True and meta["champion_version"] == champ.version
    flagged = meta["drifted_cohorts"]
    assert flagged and all("device=moto" in c for c in flagged), flagged
    report = json.loads(Path(str(meta["report"])).read_text())
    moto = [c for c in report["cohorts"] if c["cohort"] in flagged]
    assert all("brightness" in c["columns"] for c in moto)
    assert "DRIFTED" in str(meta["cohorts"]) and "brightness" in str(meta["cohorts"])

    # The flagged day retrains through the drift path: once, and not within the cooldown.
    resources = platform_resources(cfg)

    def tick(cursor=None, cooldown_s=1800):
        settings = PlatformSettings(
            classes=list(cfg.classes), home=str(cfg.home), retrain_cooldown_s=cooldown_s
        )
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources | {"settings": settings},
            definitions=build_defs(cfg),
        ) as ctx:  # fmt: skip
            return field_drift_sensor(cfg).evaluate_tick(ctx)

    assert not tick().run_requests  # the training above is recent
    fired = tick(cooldown_s=0)
    (retrain,) = fired.run_requests or []
    assert retrain.run_key == f"field_drift:{DAY}:v{champ.version}"
    assert retrain.tags["cv_assets/trigger"] == "field_drift"
    assert "device=moto" in retrain.tags["cv_assets/drift_cohorts"]
    assert not tick(fired.cursor, cooldown_s=0).run_requests


def test_a_day_without_traffic_is_recorded_as_such(small_home, instance):
    cfg = dataclasses.replace(small_home)
    assert train(cfg, instance).success
    job = build_defs(cfg).resolve_job_def("field_monitoring_job")
    run = job.execute_in_process(partition_key=DAY, instance=instance, run_config=QUIET)
    meta = materialized(run, "field_drift")
    assert meta is not None and meta["n_events"] == 0 and meta["drifted"] is False
    assert "no field events" in str(meta["cohorts"])
