"""The retraining triggers on a real instance: volume (with debounce and cooldown), degradation,
drift and the schedule. Conditions are evaluated by Dagster's own evaluator, sensors and the
schedule by their real tick functions; no training runs here (see test_daemon_loop.py)."""

import dataclasses
import time
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.execution.api import create_execution_plan

from cv_assets.definitions import build_defs
from cv_assets.defs.automation.schedules import retrain_schedule
from cv_assets.defs.automation.sensors import degradation_sensor, drift_sensor
from cv_assets.defs.automation.state import new_accepted_data
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.training.jobs import training_tags
from cv_assets.resources.environment import platform_resources
from cv_assets_tests.support.jobs import QUIET, ingest
from cv_assets_tests.support.landing import land

pytestmark = pytest.mark.asset

CHAIN = ["training_dataset", "yolo_model", "model_evaluation", "mobile_model", "champion_model"]


def _requested(result) -> list[str]:
    return [k for k in CHAIN if result.get_requested_partitions(dg.AssetKey(k))]


def _labels(result) -> str:
    res = next(r for r in result.results if r.key == dg.AssetKey("training_dataset"))
    labels, stack = [], [res]
    while stack:
        node = stack.pop()
        labels.append(node.condition.get_label() or "")
        stack.extend(node.child_results)
    return " | ".join(labels)


def _snapshot_dataset(cfg, instance) -> None:
    job = build_defs(cfg).resolve_job_def("training_job")
    r = job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey("training_dataset")]
    )
    assert r.success


def _in_progress_intake(cfg, instance) -> dg.DagsterRun:
    """A not-yet-finished intake run of a new batch, as the daemon would have it mid-way."""
    (b,) = land(cfg, batches=1, images=12, seed=77)
    instance.add_dynamic_partitions(BATCHES, [b.batch_id])
    job = build_defs(cfg).resolve_job_def("intake_job")
    tags = {"dagster/partition": b.batch_id}
    plan = create_execution_plan(job, run_config={}, tags=tags, instance_ref=instance.get_ref())
    return instance.create_run_for_job(
        job_def=job,
        execution_plan=plan,
        run_config={},
        tags=tags,
        status=dg.DagsterRunStatus.NOT_STARTED,
    )


def test_new_data_counts_accepted_images_outside_the_newest_dataset(cfg, instance):
    assert new_accepted_data(instance).images == 0
    first = ingest(cfg, instance, batches=2, images=12, size=96)
    new = new_accepted_data(instance)
    assert new.batches == tuple(sorted(first)) and new.images == 24
    _snapshot_dataset(cfg, instance)
    assert new_accepted_data(instance).images == 0
    (third,) = ingest(cfg, instance, batches=1, images=12, size=96, seed=9, corrupt_fraction=0.25)
    later = new_accepted_data(instance)
    # Only accepted images count: the planted faults were quarantined.
    assert later.batches == (third,) and 0 < later.images < 12
    assert later.dataset_version and later.dataset_version in later.describe()


def test_volume_trigger_requests_the_whole_chain_once_n_is_crossed(cfg, instance):
    cfg = dataclasses.replace(cfg, retrain_min_images=20, retrain_cooldown_s=0)
    defs = build_defs(cfg)
    ingest(cfg, instance, batches=1, images=12, size=96)
    below = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _requested(below) == []
    assert "volume: >= 20 newly accepted images" in _labels(below)
    ingest(cfg, instance, batches=1, images=12, size=96, seed=1)
    crossed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=below.cursor)
    # Everything downstream is eager, so one tick requests the dataset and the whole chain.
    assert _requested(crossed) == CHAIN
    assert not crossed.get_requested_partitions(dg.AssetKey("drift_report"))
    _snapshot_dataset(cfg, instance)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=crossed.cursor)
    assert "training_dataset" not in _requested(after)


def test_debounce_waits_for_intake_in_progress(cfg, instance):
    cfg = dataclasses.replace(cfg, retrain_min_images=20, retrain_cooldown_s=0)
    defs = build_defs(cfg)
    ingest(cfg, instance, batches=2, images=12, size=96)
    run = _in_progress_intake(cfg, instance)
    held = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _requested(held) == [] and "debounce: no intake in progress" in _labels(held)
    instance.report_run_canceled(run)
    go = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=held.cursor)
    assert _requested(go) == CHAIN


def test_cooldown_holds_the_volume_trigger_after_any_training(cfg, instance):
    ingest(cfg, instance, batches=2, images=12, size=96)
    job = build_defs(cfg).resolve_job_def("training_job")
    # A training run of any trigger (here: a manual one) starts the cooldown.
    instance.create_run_for_job(
        job_def=job, tags=training_tags(cfg), status=dg.DagsterRunStatus.FAILURE
    )
    cooling = build_defs(dataclasses.replace(cfg, retrain_min_images=20, retrain_cooldown_s=3600))
    held = dg.evaluate_automation_conditions(defs=cooling, instance=instance)
    assert _requested(held) == [] and "cooldown: no training started in the last 3600 s" in (
        _labels(held)
    )
    free = build_defs(dataclasses.replace(cfg, retrain_min_images=20, retrain_cooldown_s=0))
    go = dg.evaluate_automation_conditions(defs=free, instance=instance, cursor=held.cursor)
    assert _requested(go) == CHAIN


def _report_freshness(instance, state: FreshnessState) -> None:
    """The freshness daemon's verdict on the model, recorded as the daemon records it."""
    instance._report_runless_asset_event(
        FreshnessStateChange(
            key=dg.AssetKey("yolo_model"),
            new_state=state,
            previous_state=FreshnessState.UNKNOWN,
            state_change_timestamp=time.time(),
        )
    )


def test_freshness_trigger_retrains_a_stale_model_once_any_new_data_exists(cfg, instance):
    cfg = dataclasses.replace(cfg, retrain_min_images=200, retrain_cooldown_s=0, model_max_age_h=2)
    defs = build_defs(cfg)
    ingest(cfg, instance, batches=1, images=12, size=96)
    fresh = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # 12 new images are below N=200, and the model is not stale: nothing.
    assert _requested(fresh) == [] and "freshness: yolo_model older than 2 h" in _labels(fresh)
    _report_freshness(instance, FreshnessState.FAIL)
    stale = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=fresh.cursor)
    assert _requested(stale) == CHAIN
    _snapshot_dataset(cfg, instance)
    # Still stale, but no data the newest dataset lacks: retraining would learn nothing new.
    idle = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=stale.cursor)
    assert "training_dataset" not in _requested(idle)


def _flag(instance, asset: str, batch: str, **meta) -> None:
    instance.add_dynamic_partitions(BATCHES, [batch])
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset, partition=batch, metadata={"champion_version": "3", **meta})
    )


def _tick(sensor, cfg, instance, cursor=None, cooldown_s=0):
    res = platform_resources(dataclasses.replace(cfg, retrain_cooldown_s=cooldown_s))
    with (
        dg.partition_loading_context(dynamic_partitions_store=instance),
        dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=res, definitions=build_defs(cfg)
        ) as ctx,
    ):
        return sensor(cfg).evaluate_tick(ctx)


@pytest.mark.parametrize(
    ("sensor", "asset", "flag", "trigger"),
    [
        (degradation_sensor, "champion_performance", "degraded", "degradation"),
        (drift_sensor, "drift_report", "drifted", "drift"),
    ],
)
def test_event_sensors_request_one_retraining_per_event(
    cfg, instance, sensor, asset, flag, trigger
):
    _flag(instance, asset, "calm", **{flag: False, "map50": 0.9, "champion_test_map50": 0.9})
    _flag(instance, asset, "bad", **{flag: True, "map50": 0.4, "champion_test_map50": 0.9})
    _flag(instance, asset, "worse", **{flag: True, "map50": 0.3, "champion_test_map50": 0.9})
    fired = _tick(sensor, cfg, instance)
    # A burst of flagged batches is one retraining: its dataset holds them all.
    (req,) = fired.run_requests or []
    assert req.run_key == f"{trigger}:bad:v3" and req.tags["cv_assets/trigger"] == trigger
    assert req.tags["cv_assets/trigger_batch"] == "bad"
    assert not _tick(sensor, cfg, instance, fired.cursor).run_requests  # nothing new
    job = build_defs(cfg).resolve_job_def("training_job")
    instance.create_run_for_job(
        job_def=job, tags=training_tags(cfg), status=dg.DagsterRunStatus.FAILURE
    )
    _flag(instance, asset, "later", **{flag: True, "map50": 0.2, "champion_test_map50": 0.9})
    cooled = _tick(sensor, cfg, instance, fired.cursor, cooldown_s=3600)
    assert not cooled.run_requests and "later" in str(cooled.skip_message)
    assert "cooldown" in str(cooled.skip_message)


def test_drift_on_a_batch_without_labelled_images_does_not_retrain(cfg, instance):
    # Field frames sampled for low confidence: drifted by their selection, and nothing labelled.
    _flag(instance, "validated_batch", "field-2026-11-30-0a1b2c3d4e", accepted=0, unlabelled=40)
    _flag(instance, "drift_report", "field-2026-11-30-0a1b2c3d4e", drifted=True)
    quiet = _tick(drift_sensor, cfg, instance)
    assert not quiet.run_requests
    assert "holds no labelled image: nothing to retrain on" in str(quiet.skip_message)
    _flag(instance, "validated_batch", "labelled", accepted=30, unlabelled=0)
    _flag(instance, "drift_report", "labelled", drifted=True)
    (req,) = _tick(drift_sensor, cfg, instance, quiet.cursor).run_requests or []
    assert req.run_key == "drift:labelled:v3"


def test_event_retraining_carries_the_event_training_settings(cfg, instance):
    _flag(instance, "drift_report", "b1", drifted=True)
    warm = dataclasses.replace(cfg, event_train={"warm_start": True, "epochs": 3})
    (req,) = _tick(drift_sensor, warm, instance).run_requests or []
    assert req.run_config == {"ops": {"yolo_model": {"config": {"warm_start": True, "epochs": 3}}}}


def test_schedule_retrains_only_when_new_data_exists(cfg, instance):
    def tick():
        res = platform_resources(dataclasses.replace(cfg, retrain_cooldown_s=0))
        at = datetime(2026, 11, 26, 3, tzinfo=UTC)
        with dg.build_schedule_context(
            instance=instance, resources=res, scheduled_execution_time=at
        ) as ctx:
            return retrain_schedule(cfg).evaluate_tick(ctx)

    idle = tick()
    assert not idle.run_requests and "0 newly accepted images" in str(idle.skip_message)
    ingest(cfg, instance, batches=1, images=12, size=96)
    (req,) = tick().run_requests or []
    assert req.tags["cv_assets/trigger"] == "schedule" and int(req.tags["cv_assets/new_images"])
    assert req.run_key == "schedule:2026-11-26T03:00:00+00:00"  # one run per cron tick
    assert retrain_schedule(cfg).default_status == dg.DefaultScheduleStatus.STOPPED
