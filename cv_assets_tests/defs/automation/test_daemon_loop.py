"""The closed loop under the real daemon (``dagster dev``), with tiny trainings.

Intake and volume with debounce: three batches land at once (one with planted faults, which
intake quarantines and counts), and the dataset waits for all their intakes even though two
already cross N. The daemon is then killed outright and a small batch lands
while it is down: after the restart, that batch is taken in, nothing earlier runs twice, and the
model (now past its FreshnessPolicy) retrains on that batch although it is below N.
"""

import json
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.read_side import latest_by_partition, metadata_of, registry_for
from cv_assets_tests.support.landing import land
from cv_assets_tests.support.processes import Daemon

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ENV = {
    "CV_ASSETS_TRAIN": json.dumps({"epochs": 1, "imgsz": 64, "batch": 16, "min_train_images": 8}),
    "CV_ASSETS_GATE": json.dumps({"min_map50": 0.0}),
    "CV_ASSETS_RETRAIN_MIN_IMAGES": "30",
    "CV_ASSETS_RETRAIN_COOLDOWN_S": "30",
    "CV_ASSETS_MODEL_MAX_AGE_H": str(61 / 3600),  # stale a minute after training (Dagster's least)
    "CV_ASSETS_SENSOR_INTERVAL": "2",
    "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
}


def _training_runs(instance) -> list[dg.DagsterRun]:
    runs = instance.get_runs(dg.RunsFilter(tags={"cv_assets/stage": "training"}))
    return sorted(runs, key=lambda r: r.run_id)


def _finished(instance, n: int) -> bool:
    runs = _training_runs(instance)
    return len(runs) >= n and all(r.is_finished for r in runs)


def _automatic(instance, n: int) -> bool:
    runs = instance.get_runs(dg.RunsFilter(tags={"cv_assets/trigger": "automation"}))
    return len(runs) >= n and all(r.is_finished for r in runs)


def _models(instance) -> list[dict]:
    return _metadata(instance, "yolo_model")


def _datasets(instance) -> list[dict]:
    return _metadata(instance, "training_dataset")


def _metadata(instance, asset: str) -> list[dict]:
    recs = instance.fetch_materializations(dg.AssetKey(asset), limit=20).records
    return [metadata_of(r.asset_materialization) for r in reversed(recs) if r.asset_materialization]


@pytest.mark.timeout(1200)
def test_volume_debounce_restart_and_freshness_under_the_real_daemon(cfg, tmp_path):
    # One batch with planted faults: the daemon's intake quarantines them and counts them.
    landed = land(cfg, batches=1, images=24, size=96, corrupt_fraction=0.34)
    landed += land(cfg, batches=2, images=24, size=96, seed=7)
    first = [b.batch_id for b in landed]
    daemon = Daemon(tmp_path / "dagster-dev.log", ENV)
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    try:
        daemon.start()
        daemon.wait("the volume-triggered training", lambda: _automatic(instance, 1), 600)
        (v1,) = _training_runs(instance)
        assert v1.status == dg.DagsterRunStatus.SUCCESS, daemon.tail()
        assert v1.tags["cv_assets/trigger"] == "automation"
        # Debounce: any two intakes already cross N=30, but the third was still queued.
        (ds1,) = _datasets(instance)
        assert sorted(ds1["batch_ids"]) == sorted(first)
        validated = latest_by_partition(instance, "validated_batch")
        assert set(instance.get_dynamic_partitions(BATCHES)) == set(first)
        for b in landed:
            m = validated[b.batch_id]
            assert m["landed"] == b.files_landed == m["accepted"] + m["quarantined"]
        assert validated[landed[0].batch_id]["quarantined"] > 0

        daemon.kill()  # a crash, mid-loop: cursors and run keys must carry the state
        (late,) = land(cfg, batches=1, images=12, size=96, seed=41)
        daemon.start()
        daemon.wait("the freshness-triggered training", lambda: _automatic(instance, 2), 600)
        # The late batch (12 accepted images, below N) was taken in after the restart, and the
        # stale model retrained on it: freshness, not volume.
        validated = latest_by_partition(instance, "validated_batch")
        assert set(validated) == {*first, late.batch_id}
        ds2 = _datasets(instance)[-1]
        assert late.batch_id in ds2["batch_ids"] and int(validated[late.batch_id]["accepted"]) < 30
        # The late batch may also drift (its monitoring runs too); whatever fires, each dataset
        # version is trained once.
        daemon.wait("all trainings", lambda: _finished(instance, 2), 300)
        time.sleep(10)  # a few more ticks with no new data: no further training
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in _training_runs(instance))
        trained = [m for m in _models(instance) if not m["reused_existing_weights"]]
        assert Counter(m["dataset_version"] for m in trained) == {
            ds1["dataset_version"]: 1,
            ds2["dataset_version"]: 1,
        }
        # Nothing was taken in twice across the restart: one intake per batch.
        intakes = instance.get_runs(dg.RunsFilter(tags={"cv_assets/trigger": "landing"}))
        assert Counter(r.tags["dagster/partition"] for r in intakes) == dict.fromkeys(
            [*first, late.batch_id], 1
        )
        _gate_holds_under_automation(cfg, instance, daemon)
    finally:
        daemon.kill(signal.SIGINT)
        instance.dispose()


def _gate_holds_under_automation(cfg, instance, daemon: Daemon) -> None:
    """model_evaluation re-run alone, with a gate it fails: the eager condition downstream must
    not launch mobile_model or champion_model (it did, and promoted the rejected model, before
    the condition waited for upstream blocking checks)."""
    champ = registry_for(cfg).champion()
    assert champ is not None
    since = datetime.now(UTC)
    rejected = (
        build_defs(cfg)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey("model_evaluation")],
            run_config={"ops": {"model_evaluation": {"config": {"min_map50": 1.01}}}},
            raise_on_error=False,
        )
    )
    (check,) = rejected.get_asset_check_evaluations()
    assert not check.passed
    time.sleep(20)  # ten automation ticks at CV_ASSETS_SENSOR_INTERVAL=2
    later = instance.get_runs(dg.RunsFilter(created_after=since))
    launched = [r for r in later if r.run_id != rejected.run_id]
    assert not launched, [(r.run_id, r.asset_selection) for r in launched]
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.tail()  # it was ticking
    after = registry_for(cfg).champion()
    assert after is not None and after.version == champ.version
