"""Sampled field frames on a real instance: a day's low-confidence frames land as a batch that
intake takes into the unlabelled pool, random ones form the audit set, people's labels of it give
the live accuracy, and the sensors run each step once."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.cli.status import collect_status, render_status
from cv_assets.definitions import build_defs
from cv_assets.defs.monitoring.audit import audit_sensor
from cv_assets.defs.monitoring.field import field_day_sensor
from cv_assets.lib.synth.scenes import Shift
from cv_assets.lib.telemetry.audit import audit_events, export_audit, import_audit
from cv_assets.lib.telemetry.fleet import FleetCohort, simulate_day
from cv_assets.resources.environment import platform_resources
from cv_assets_tests.support.field import store_events, trained_champion
from cv_assets_tests.support.jobs import QUIET, materialized, run_intake

pytestmark = pytest.mark.slow


def _tick(sensor, cfg, instance):
    with dg.build_sensor_context(
        instance=instance, resources=platform_resources(cfg), definitions=build_defs(cfg)
    ) as ctx:
        return sensor.evaluate_tick(ctx)


def _day_run_key(cfg, instance, day: str) -> str:
    result = _tick(field_day_sensor(cfg), cfg, instance)
    (req,) = [r for r in result.run_requests or [] if r.partition_key == day]
    return str(req.run_key)


def test_a_days_frames_reach_the_pool_and_the_audit_set_and_give_the_live_accuracy(
    small_home, instance, tmp_path
):
    cfg = small_home
    champ, store, onnx = trained_champion(cfg, instance)
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    truth: dict[str, str] = {}
    # Two halves of the fleet, whatever the tiny model scores: one whose every event is sampled
    # as low-confidence (the bar is above any score), one whose half is sampled at random.
    # Every user consents.
    darker = [FleetCohort("Moto G54", Shift(brightness=-0.3))]
    events = []
    for seed, bar, share in ((5, 1.01, 0.0), (6, 0.0, 0.5)):
        events += simulate_day(
            str(onnx), champ.version, champ.weights_sha256, day, installs=20,
            events_per_install=4, seed=seed, frame_size=96, low_confidence=bar,
            random_share=share, consent_share=1.0, truth=truth, cohorts=darker,
        )  # fmt: skip
    low = {e["event_id"] for e in events if e["sampling"] == "low_confidence"}
    rnd = {e["event_id"] for e in events if e["sampling"] == "random"}
    assert low and rnd and set(truth) == low | rnd
    store_events(cfg, store, events, champ.version)

    # The sensor asks for the closed day under a run key naming its parts: the same key while
    # the parts stay (Dagster runs a key once), another once late events add a part.
    key = _day_run_key(cfg, instance, day)
    assert key.startswith(f"field:{day}:") and _day_run_key(cfg, instance, day) == key

    job = build_defs(cfg).resolve_job_def("field_monitoring_job")
    rc = QUIET | {"ops": {"field_drift": {"config": {"min_events": 20}}}}
    run = job.execute_in_process(partition_key=day, instance=instance, run_config=rc)
    assert run.success
    meta = materialized(run, "field_samples")
    assert meta is not None and meta["n_events"] == len(events)
    assert meta["landed_frames"] == len(low) and meta["audit_frames"] == len(rnd)
    batch = str(meta["field_batch"])
    assert batch.startswith(f"field-{day}-")

    # The landed batch is an ordinary unlabelled batch: intake takes every frame into the pool.
    intake = run_intake(cfg, instance, batch, QUIET)
    assert intake.success
    validated = materialized(intake, "validated_batch")
    assert validated is not None
    assert validated["landed"] == len(low) and validated["unlabelled"] == len(low)

    # A second run of the day lands nothing twice.
    again = job.execute_in_process(partition_key=day, instance=instance, run_config=rc)
    again_meta = materialized(again, "field_samples")
    assert again_meta is not None
    assert again_meta["landed_frames"] == 0 and again_meta["landed_before"] == len(low)
    assert again_meta["field_batch"] == "-"

    # Late events of the day (an app's offline queue): a new run key, and only they land.
    late = simulate_day(
        str(onnx), champ.version, champ.weights_sha256, day, installs=3, events_per_install=4,
        seed=7, frame_size=96, low_confidence=1.01, consent_share=1.0,
    )  # fmt: skip
    store_events(cfg, store, late, champ.version)
    assert _day_run_key(cfg, instance, day) != key
    late_run = job.execute_in_process(partition_key=day, instance=instance, run_config=rc)
    late_meta = materialized(late_run, "field_samples")
    assert late_meta is not None and late_meta["landed_frames"] == len(late)
    assert late_meta["landed_before"] == len(low)
    assert late_meta["field_batch"] not in ("-", batch)

    # A person labels the audit frames; one file breaks a rule and one names no audit frame.
    folder = tmp_path / "audit"
    assert export_audit(store, folder, list(cfg.classes)) == len(rnd)
    assert {p.stem for p in (folder / "images").glob("*.jpg")} == rnd
    (folder / "labels").mkdir()
    ids = sorted(rnd)
    for eid in ids:
        (folder / "labels" / f"{eid}.txt").write_text(truth[eid])
    (folder / "labels" / f"{ids[0]}.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    (folder / "labels" / "not-an-audit-frame.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    res = import_audit(store, folder, list(cfg.classes))
    assert res.read == len(ids) + 1 and res.accepted == len(ids) - 1
    why = dict(res.quarantined)
    assert f"labels/{ids[0]}.txt:1: class id 7 is outside 0..2" in why[f"labels/{ids[0]}.txt"]
    assert "not an audit frame" in why["labels/not-an-audit-frame.txt"]
    assert len(audit_events(store)) == len(rnd)

    (acc_req,) = _tick(audit_sensor(cfg), cfg, instance).run_requests or []
    acc_job = build_defs(cfg).resolve_job_def("field_accuracy_job")
    acc_run = acc_job.execute_in_process(
        instance=instance,
        run_config=QUIET | {"ops": {"field_accuracy": {"config": {"min_images": 5}}}},
        tags={"dagster/run_key": str(acc_req.run_key)},
    )
    acc = materialized(acc_run, "field_accuracy")
    assert acc is not None and acc["labelled_frames"] == len(ids) - 1
    table = str(acc["live_map50"])
    assert f"model={champ.version}" in table and "[" in table
    report = Path(str(acc["report"]))
    assert report.exists() and '"rows"' in report.read_text()

    # cv-assets status shows the day and the live accuracy.
    status = collect_status(cfg)
    (row,) = [d for d in status["field"]["days"] if d["day"] == day]
    assert row["events"] == len(events) + len(late)
    assert row["frames_to_pool"] == len(low) + len(late)
    assert row["audit_frames"] == len(rnd) and status["field"]["audit_labelled"] == len(ids) - 1
    text = render_status(status)
    assert f"field {day}: {len(events) + len(late)} events" in text
    assert f"model={champ.version}" in text
