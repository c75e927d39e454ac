"""``hpo_sweep``: an Optuna study of real tiny trainings in the training worker, each an MLflow
child run held to the mobile budgets; the best feasible goes through the gate, and a sweep that
finds none promotes nothing."""

import tempfile
from pathlib import Path

import dagster as dg
import optuna
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.hpo import TrialPruned, epoch_reporter
from cv_assets.lib.training.search import VAL_METRIC
from cv_assets.lib.training.train import cache_key, train_and_record
from cv_assets.lib.training.yolo import TrainParams, train_yolo
from cv_assets_tests.support.jobs import QUIET, TINY, materialized

pytestmark = pytest.mark.slow


def _sweep(cfg, instance, assets: list[str], search: dict | None = None, mobile=None):
    ops: dict = {}
    if "yolo_model" in assets:
        ops["yolo_model"] = {"config": TINY | {"search": search or {}}}
    if "model_evaluation" in assets:
        ops["model_evaluation"] = {"config": {"min_map50": 0.0}}
    if mobile is not None:
        ops["mobile_model"] = {"config": mobile}
    job = build_defs(cfg).resolve_job_def("hpo_sweep")
    return job.execute_in_process(
        instance=instance, run_config=QUIET | {"ops": ops}, raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in assets],
    )  # fmt: skip


def _table(md: str) -> list[list[str]]:
    rows = [r for r in md.splitlines() if r.startswith("| ") and not r.startswith("| trial")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def _children(client, parent: str) -> dict[int, object]:
    runs = client.search_runs(
        [tracking.experiment_id(client)], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    return {int(r.data.tags["optuna_trial"]): r for r in runs}


def test_hpo_sweep_tunes_on_val_only_records_each_trial_and_gates_the_best(small_home, instance):
    cfg = small_home
    snap = _sweep(cfg, instance, ["training_dataset"])
    dataset = snap.asset_value("training_dataset")
    store = ArtifactStore(cfg.artifacts_root)
    # The test split's images become garbage: tuning must neither need them nor notice them.
    samples = pd.read_parquet(dataset["samples"]["uri"])  # a local store: URIs are paths
    test_images = [Path(u) for u in samples.loc[samples["split"] == "test", "image_uri"]]
    assert test_images
    kept = {p: p.read_bytes() for p in test_images}
    for p in test_images:
        p.write_bytes(b"\xff\xd8 not an image " * 64)
    search = {"trials": 3, "strategy": "tpe", "pruner": "median", "lr0": [0.001, 0.02]}
    tuned = _sweep(cfg, instance, ["yolo_model"], search)
    assert tuned.success
    for p, data in kept.items():
        p.write_bytes(data)
    gated = _sweep(cfg, instance, ["model_evaluation", "mobile_model", "champion_model"])
    assert gated.success and materialized(gated, "champion_model") is not None

    model = materialized(tuned, "yolo_model")
    rec = tuned.asset_value("yolo_model")
    assert model is not None and rec["search_parent_run"]
    cells = _table(str(model["search"]))
    assert [c[0] for c in cells] == ["0", "1", "2"]
    assert {c[2] for c in cells} <= {"complete", "pruned"} and cells[0][2] == "complete"
    (best,) = [c for c in cells if c[6] == "best"]  # trial, lr0, state, val, ms, MiB, best
    # MLflow: the study's trials are child runs of one parent, tagged with the study and trial.
    c = tracking.client(cfg.mlflow_tracking_uri)
    parent = c.get_run(rec["search_parent_run"])
    name = parent.data.tags["optuna_study"]
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna_best_trial"] == best[0]
    runs = _children(c, rec["search_parent_run"])
    assert sorted(runs) == [0, 1, 2]
    for n, run in runs.items():
        tags, metrics = run.data.tags, run.data.metrics  # type: ignore[attr-defined]
        assert tags["optuna_study"] == name and tags["optuna_state"] == cells[n][2]
        assert 0.001 <= float(run.data.params["lr0"]) <= 0.02  # type: ignore[attr-defined]
        if tags["optuna_state"] == "complete":
            # Measured as mobile_model measures: ONNX fp32, within the default budgets.
            assert tags["feasible"] == "true"
            assert 0 < metrics["onnx_latency_ms"] <= 100 and 0 < metrics["onnx_size_mb"] <= 25
        else:
            assert run.info.status == "KILLED"  # type: ignore[attr-defined]
    assert rec["mlflow_run_id"] == runs[int(best[0])].info.run_id  # type: ignore[attr-defined]
    # The study is in optuna.db beside MLflow's database, where a retried run would find it.
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cfg.home / 'optuna.db'}")
    assert len(study.trials) == 3 and study.best_trial.number == int(best[0])
    # The objective never saw the test split: the best trial trained again here, on the intact
    # data, reaches the same validation mAP50-95 as in the sweep, garbage and all.
    p = TrainParams(**rec["params"])
    with tempfile.TemporaryDirectory() as tmp:
        again = train_yolo(Path(store.uri(dataset["data_yaml_key"])), Path(tmp), p)
    assert again.metrics[VAL_METRIC] == rec["val_map50_95"]


def test_a_crashing_trial_fails_alone_and_an_impossible_budget_promotes_nothing(
    small_home, instance
):
    cfg = small_home
    # Grid order: the misspelt architecture first (it crashes), then a real one (over budget).
    search = {"trials": 2, "strategy": "grid", "pruner": "none", "lr0": [0.003],
              "model_yaml": ["yolo11n-typo.yaml", "yolo11n.yaml"]}  # fmt: skip
    result = _sweep(
        cfg, instance, ["training_dataset", "yolo_model", "model_evaluation", "mobile_model",
                        "champion_model"], search, mobile={"max_latency_ms": 0.001},
    )  # fmt: skip
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "yolo_model"
    data = failure.step_failure_data
    said = (data.user_failure_data.description if data.user_failure_data else None) or ""
    assert "NoFeasibleTrial" in said and "no trial of 2 met the mobile budgets" in said
    assert "latency <= 0.001 ms, size <= 25 MiB" in said
    assert "The best infeasible was trial 1 (lr0 0.003, model_yaml yolo11n.yaml)" in said
    table = str(data.user_failure_data.metadata["search"].value)  # type: ignore[union-attr]
    assert [c[3] for c in _table(table)] == ["failed", "infeasible"]
    assert "FileNotFoundError" in _table(table)[0][-1]
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert materialized(result, "yolo_model") is None
    assert materialized(result, "champion_model") is None
    # MLflow: the crash FAILED, the study went on; the trial over budget finished, infeasible.
    c = tracking.client(cfg.mlflow_tracking_uri)
    (parent,) = c.search_runs([tracking.experiment_id(c)], "attributes.run_name = 'hpo_sweep'")
    assert parent.info.status == "FAILED" and parent.data.tags["optuna_best_trial"] == "none"
    runs = _children(c, parent.info.run_id)
    crashed, over = runs[0], runs[1]
    assert crashed.info.status == "FAILED" and "does not exist" in crashed.data.tags["error"]  # type: ignore[attr-defined]
    assert over.info.status == "FINISHED" and over.data.tags["feasible"] == "false"  # type: ignore[attr-defined]
    assert over.data.metrics["onnx_latency_ms"] > 0.001  # type: ignore[attr-defined]


def test_a_pruned_training_stops_at_once_and_its_run_ends_killed_not_failed(small_home, instance):
    cfg = small_home
    dataset = _sweep(cfg, instance, ["training_dataset"]).asset_value("training_dataset")
    store = ArtifactStore(cfg.artifacts_root)
    c = tracking.client(cfg.mlflow_tracking_uri)
    tracking.experiment_id(c, artifact_location=cfg.mlflow_artifact_root)
    # A study whose one finished trial reached 1.0 at epoch 1: any real tiny training is below.
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    strong = study.ask()
    strong.report(1.0, 1)
    study.tell(strong, 1.0)
    trial = study.ask()
    p = TrainParams(epochs=TINY["epochs"], imgsz=TINY["imgsz"], batch=TINY["batch"])
    with pytest.raises(TrialPruned, match=r"pruned \(median\) at epoch 1/2"):
        train_and_record(
            store, dataset, p, c, run_name="trial-1", run_tags={"optuna_trial": "1"},
            progress=epoch_reporter(trial, p.epochs, "median"),
        )  # fmt: skip
    (run,) = c.search_runs([tracking.experiment_id(c)], "tags.optuna_trial = '1'")
    assert run.info.status == "KILLED"
    assert len(c.get_metric_history(run.info.run_id, "train/box_loss")) == 1  # one epoch, no more
    assert not store.exists(layout.model_record(cache_key(dataset["version"], p, None)))
