import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.cli.status import collect_status
from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import sha256_file
from cv_assets.lib.tracking import runs as tracking
from cv_assets.read_side import metadata_of, registry_for
from cv_assets_tests.support.jobs import (
    QUIET,
    check_named,
    ingest,
    materialized,
    train,
)
from cv_assets_tests.support.processes import training_workers

pytestmark = pytest.mark.slow


def test_first_model_is_trained_tracked_registered_and_promoted(small_home, instance):
    cfg = small_home
    result = train(cfg, instance)
    assert result.success
    model = materialized(result, "yolo_model")
    assert model is not None and model["reused_existing_weights"] is False
    weights = Path(str(model["weights"]))
    assert sha256_file(weights) == model["weights_sha256"]
    # MLflow: one run owned by the asset, params, per-epoch metrics, dataset version.
    c = tracking.client(cfg.mlflow_tracking_uri)
    run = c.get_run(str(model["mlflow_run_id"]))
    assert run.data.params["epochs"] == "2" and run.data.params["model_yaml"] == "yolo11n.yaml"
    assert run.data.tags["dataset_version"] == model["dataset_version"]
    # Every run names the Dagster run and asset that made it, and its training data as an input.
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["dagster_asset_key"] == "yolo_model"
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.digest == model["dataset_version"]
    assert len(c.get_metric_history(run.info.run_id, "train/box_loss")) == 2
    assert "test_map50" in run.data.metrics
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/pr_curve.png" in arts and "evaluation/confusion_matrix.png" in arts
    # Evaluation metadata embeds the plots; the gate passed on the floor alone.
    ev = materialized(result, "model_evaluation")
    assert ev is not None and str(ev["pr_curve"]).startswith("![pr_curve](data:image/png;base64,")
    check = check_named(result, "challenger_beats_champion")
    assert check.passed and "no champion yet" in (check.description or "")
    # Registry and status.
    status = collect_status(cfg)
    champ = status["champion"]
    assert champ["version"] == "1" and champ["weights_sha256"] == model["weights_sha256"]
    assert champ["class_names"] == ["square", "circle", "triangle"] and champ["imgsz"] == 64
    assert status["models"][0]["status"] == "champion"
    assert status["datasets"][0]["version"] == model["dataset_version"]
    assert status["promotions"][0]["action"] == "promote"
    # The version is a logged model whose metrics are MLflow metrics, not string tags.
    version = c.get_model_version(tracking.MODEL_NAME, "1")
    assert "map50" not in version.tags and version.tags["weights_sha256"] == champ["weights_sha256"]
    logged = c.get_logged_model(str(registry_for(cfg).get("1").model_uri).split("/")[-1])
    assert {m.key for m in logged.metrics} >= {"map50", "map50_95", "precision", "recall"}
    assert logged.tags["dagster_asset_key"] == "champion_model"


def test_unchanged_dataset_and_config_reuse_weights_unless_forced(small_home, instance):
    first = materialized(train(small_home, instance), "yolo_model")
    again = materialized(train(small_home, instance), "yolo_model")
    assert first and again and again["reused_existing_weights"] is True
    assert again["weights_sha256"] == first["weights_sha256"]
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    forced = materialized(train(small_home, instance, {"force": True}), "yolo_model")
    assert forced and forced["reused_existing_weights"] is False
    assert forced["mlflow_run_id"] != first["mlflow_run_id"]


def test_too_small_dataset_is_refused_before_ultralytics(cfg, instance):
    ingest(cfg, instance, batches=1, images=6, size=64)
    result = train(cfg, instance, {"min_train_images": 16})
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "too small to train on" in str(failure.event_specific_data)
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


def test_all_quarantined_batch_gives_a_clear_empty_dataset_error(cfg, instance):
    ingest(cfg, instance, expect_ok=False, batches=1, images=4, size=64, corrupt_fraction=1.0)
    result = train(cfg, instance)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no accepted samples" in str(failure.event_specific_data)


def test_mlflow_unreachable_fails_naming_the_uri_after_retries(small_home, instance):
    uri = "http://127.0.0.1:9"  # discard port: nothing listens
    cfg = PlatformConfig.from_env(dict(os.environ) | {"MLFLOW_TRACKING_URI": uri})
    result = train(cfg, instance, defs=build_defs(cfg))
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert uri in str(failures[-1].event_specific_data)
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 2


def test_tampered_weights_are_refused_at_evaluation(small_home, instance):
    model = materialized(train(small_home, instance), "yolo_model")
    assert model is not None
    Path(str(model["weights"])).write_bytes(b"not the weights we trained")
    result = train(small_home, instance)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "refusing to load" in str(failure.event_specific_data)


def test_manual_approval_holds_the_model_until_promote_and_rollback_goes_back(small_home, instance):
    env = dict(os.environ) | {"CV_ASSETS_REQUIRE_APPROVAL": "1"}
    cfg = PlatformConfig.from_env(env)
    defs = build_defs(cfg)
    train(cfg, instance, defs=defs)  # v1
    reg = registry_for(cfg)
    assert reg.champion() is None and reg.get("1").status == "pending_approval"
    cli = [sys.executable, "-m", "cv_assets.cli"]
    out = subprocess.run(
        [*cli, "promote", "1", "--reason", "looked at the plots", "--who", "ana"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert reg.champion().version == "1"  # type: ignore[union-attr]
    train(cfg, instance, {"force": True, "seed": 1}, defs=defs)  # v2, pending
    subprocess.run([*cli, "promote", "2", "--who", "ana"], env=env, check=True)
    batch = sorted(instance.get_dynamic_partitions(BATCHES))[0]
    monitor = defs.resolve_job_def("batch_monitoring_job")
    assert monitor.execute_in_process(
        partition_key=batch, instance=instance, run_config=QUIET
    ).success
    assert not _stale(instance, defs, "drift_report", batch)  # it measured v2, the champion
    out = subprocess.run(
        [*cli, "rollback", "--reason", "field reports"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and "champion is now v1" in out.stdout
    hist = reg.history()
    assert [h["action"] for h in hist] == [
        "pending_approval",
        "approve",
        "pending_approval",
        "approve",
        "rollback",
    ]
    assert hist[1]["who"] == "ana" and hist[1]["why"] == "looked at the plots"
    # Each decision is champion_model's newest materialization (runless: no run made it), so the
    # UI's history shows it and monitoring measures the champion a person chose.
    recs = instance.fetch_materializations(dg.AssetKey("champion_model"), limit=10).records
    newest = recs[0]
    assert newest.run_id == "" and newest.asset_materialization is not None
    meta = metadata_of(newest.asset_materialization)
    assert meta["version"] == "1" and str(meta["action"]).startswith("rollback: v1 (was v2)")
    assert meta["decided_by"] == hist[-1]["who"] and "field reports" in str(meta["action"])
    kinds = [r.run_id == "" for r in reversed(recs)]  # pending (run), approve, pending, approve, rb
    assert kinds == [False, True, False, True, True]
    # What monitoring measured (v2) is now stale in the UI, and its next run measures v1.
    assert all(_stale(instance, defs, a, batch) for a in ("drift_report", "review_queue"))
    measured = monitor.execute_in_process(partition_key=batch, instance=instance, run_config=QUIET)
    for asset in ("drift_report", "champion_performance", "review_queue"):
        assert materialized(measured, asset)["champion_version"] == "1"  # type: ignore[index]
    assert not _stale(instance, defs, "drift_report", batch)


def _stale(instance, defs, asset: str, partition: str) -> bool:
    """What the UI's "stale" badge says (Dagster's own resolver, as its GraphQL layer uses it)."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey(asset), partition) == StaleStatus.STALE


def test_sigkill_mid_training_leaves_registry_unchanged_and_next_run_succeeds(
    small_home, instance, tmp_path
):
    cfg = small_home
    train(cfg, instance)  # v1 champion
    reg = registry_for(cfg)
    before = (reg.champion().version, len(reg.versions()), len(reg.history()))  # type: ignore[union-attr]
    script = (
        "import sys, dagster as dg\n"
        "from cv_assets.definitions import build_defs\n"
        "from cv_assets_tests.support.jobs import train\n"
        "from cv_assets.lib.core.settings import PlatformConfig\n"
        "cfg = PlatformConfig.from_env()\n"
        "inst = dg.DagsterInstance.from_config(str(cfg.dagster_home))\n"
        "train(cfg, inst, {'force': True, 'epochs': 30, 'seed': 7})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    c = tracking.client(cfg.mlflow_tracking_uri)
    exp = tracking.experiment_id(c)
    deadline = time.monotonic() + 240
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        runs = c.search_runs([exp], "attributes.status = 'RUNNING'")
        if runs and c.get_metric_history(runs[0].info.run_id, "train/box_loss"):
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    proc.wait(timeout=30)
    assert killed, "training finished before it could be killed"
    # The training process (Pipes) dies with the run worker that launched it.
    deadline = time.monotonic() + 10
    while training_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not training_workers(), "the training process outlived the run worker that launched it"
    # A killed worker cannot report its end. What the daemon's run monitoring does for it (the
    # worker health check of LocalRunLauncher, then free_slots_after_run_end_seconds; tested
    # under the real daemon in test_crash_recovery.py), done here directly, without a daemon:
    (dead,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    instance.report_run_failed(dead)
    instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
    after = (reg.champion().version, len(reg.versions()), len(reg.history()))  # type: ignore[union-attr]
    assert after == before
    keys = [
        json.loads(Path(p).read_text())["epochs_run"]
        for p in Path(cfg.artifacts_root).glob("models/*/record.json")
    ]
    assert len(keys) == 1  # the killed training left no finished-looking record
    assert train(cfg, instance, {"force": True, "seed": 8}).success


def test_worse_challenger_is_never_promoted_and_a_better_one_is(cfg, instance):
    ingested = ingest(cfg, instance, batches=2, images=100, size=128)
    # A short schedule that learns on 200 small images: the gate's scenario, not the product's
    # recipe (whose one warmup epoch and higher learning rate are tuned for 21 epochs at 224 px).
    base = {"imgsz": 96, "batch": 16, "lr0": 0.0015, "warmup_epochs": 3.0, "scale": 0.5}
    first = train(cfg, instance, base | {"epochs": 10})
    champ = materialized(first, "champion_model")
    assert champ is not None and champ["version"] == "1"
    assert float(champ["map50_95"]) > 0, "the champion must have learnt something to be beaten"
    reg = registry_for(cfg)
    # A worse challenger: one epoch from scratch. The gate blocks it; the alias stays.
    worse = train(cfg, instance, base | {"epochs": 1, "seed": 3})
    check = check_named(worse, "challenger_beats_champion")
    assert not check.passed and "the champion stays" in (check.description or "")
    assert materialized(worse, "champion_model") is None
    # Shadow: both models also scored on the newest batches' held-out images, beside the gate.
    ev = materialized(worse, "model_evaluation")
    assert ev is not None and int(ev["shadow_images"]) > 0
    assert set(str(ev["shadow_batches"]).split(", ")) == set(ingested)
    assert "not a criterion" in str(ev["gate"]) and "champion" in str(ev["shadow"])
    # The difference comes with its paired-bootstrap interval, in the UI, MLflow and status; AP
    # by object size is measured in model-input pixels (96 px here: every shape is small).
    low, high = float(ev["delta_ci_low"]), float(ev["delta_ci_high"])
    assert low <= float(ev["delta_map50_95"]) <= high and low < high
    assert "paired bootstrap" in str(ev["gate"]) and "ap_small" in ev
    assert ev["gate_passed"] is False and "| square |" in str(ev["class_changes"])
    trained = materialized(worse, "yolo_model")
    assert trained is not None
    run = tracking.client(cfg.mlflow_tracking_uri).get_run(str(trained["mlflow_run_id"]))
    assert run.data.metrics["test_delta_map50_95_low"] == pytest.approx(low, abs=1e-4)
    last = collect_status(cfg)["evaluations"][-1]
    assert last["gate_passed"] is False and last["delta_ci_low"] == pytest.approx(low)
    assert reg.champion().version == "1"  # type: ignore[union-attr]
    # A better challenger: the champion trained further (a warm start, as drift retraining does).
    # Promoted, v1 archived, history says why.
    better = train(cfg, instance, base | {"epochs": 12, "seed": 4, "warm_start": True})
    promoted = materialized(better, "champion_model")
    assert promoted is not None and str(promoted["action"]).startswith("promoted")
    assert float(promoted["map50_95"]) >= float(champ["map50_95"])
    assert reg.champion().version == promoted["version"]  # type: ignore[union-attr]
    assert reg.get("1").status == "archived"
    last = reg.history()[-1]
    assert last["previous"] == "1" and last["metrics_before"]["map50_95"] == champ["map50_95"]


def test_warm_start_uses_the_verified_champion_weights(small_home, instance):
    champ = materialized(train(small_home, instance), "yolo_model")
    assert champ is not None
    warm = train(small_home, instance, {"warm_start": True})
    rec = json.loads(
        (Path(small_home.artifacts_root) / "records" / "yolo_model" / "_all.json").read_text()
    )
    assert warm.success and rec["warm_start_sha256"] == champ["weights_sha256"]
    current = registry_for(small_home).champion()  # v1, or v2 if the warm start was promoted
    assert current is not None
    Path(current.weights_uri).write_bytes(b"tampered")
    refused = train(small_home, instance, {"warm_start": True, "seed": 9})
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert "refusing to load" in str(failure.event_specific_data)
