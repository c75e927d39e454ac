"""The hyperparameter search on Optuna: settings, the study's name and storage, and what a study
records of each trial (complete, pruned, failed, infeasible), with real Optuna and real MLflow.

The trainings here are a stand-in for ``train_and_record`` that keeps its contract (one MLflow
child run per trial, ended with the exception's ``mlflow_status``; the record in the store; each
epoch's val mAP50-95 through ``progress``) and learns as a function of the parameters, so that a
study's decisions are known in advance. A real training under the pruner is in test_hpo_train.py
and the asset tests.
"""

import dataclasses
import json
from pathlib import Path

import optuna
import pytest

from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.hpo import TrialPruned, epoch_reporter, run_study
from cv_assets.lib.training.records import YoloModel
from cv_assets.lib.training.search import (
    VAL_METRIC,
    NoFeasibleTrial,
    Search,
    search_problems,
    study_name,
)
from cv_assets.lib.training.studies import StudyStorage, study_storage
from cv_assets.lib.training.train import cache_key
from cv_assets.lib.training.yolo import TrainParams

pytestmark = pytest.mark.unit

DATASET = {"version": "d" * 16, "classes": ["square"]}
EPOCHS = 4


def quality(p: TrainParams) -> float:
    """What the stand-in training reaches: better with lr0 and with a bigger input."""
    return p.lr0 * 100 * (2 if p.imgsz >= 320 else 1)


class Trainings:
    """A stand-in for ``train_and_record`` (see the module docstring); ``calls`` lists what it
    trained."""

    def __init__(self) -> None:
        self.calls: list[TrainParams] = []

    def __call__(self, store, dataset, params, client, *, parent_run=None, run_name="",
                 run_tags=None, progress=None, **_) -> YoloModel:  # fmt: skip
        self.calls.append(params)
        key = cache_key(dataset["version"], params, None)
        run_id = tracking.start_run(client, run_name, run_tags or {}, parent=parent_run)
        try:
            if params.model_yaml == "broken.yaml":
                raise FileNotFoundError("broken.yaml does not exist")
            for epoch in range(1, params.epochs + 1):
                assert progress is not None
                progress(epoch, {VAL_METRIC: quality(params) * epoch / params.epochs})
        except BaseException as e:
            client.set_terminated(run_id, getattr(e, "mlflow_status", "FAILED"))
            raise
        q = quality(params)
        rec: YoloModel = {
            "key": key, "dataset_version": dataset["version"], "classes": dataset["classes"],
            "params": params.as_params(), "weights": {"uri": f"{key}.pt", "sha256": key, "size": 1},
            "mlflow_run_id": run_id, "epochs_run": params.epochs, "train_seconds": 0.1,
            "device": "cpu", "warm_start_sha256": "", "val_map50": q * 1.5, "val_map50_95": q,
            "reused": False,
        }  # fmt: skip
        store.put_bytes(layout.model_record(key), json.dumps(rec).encode())
        client.set_terminated(run_id, "FINISHED")
        return rec


def footprint(store, rec) -> tuple[float, float]:
    """Latency grows with the input: 0.1 ms a pixel of side; 5 MiB whatever the size."""
    return rec["params"]["imgsz"] * 0.1, 5.0


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One MLflow database for the module (making one costs seconds); each test's study has its
    own parent run, and its own Optuna database under its tmp_path."""
    root = tmp_path_factory.mktemp("mlflow")
    c = tracking.client(f"sqlite:///{root / 'mlflow.db'}")
    tracking.experiment_id(c, artifact_location=str(root / "mlruns"))
    return c


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def storage_of(tmp_path: Path) -> StudyStorage:
    return study_storage(f"sqlite:///{tmp_path / 'mlflow.db'}", {})


def study(
    store, client, search: Search, storage: StudyStorage | None, train=None, notes=None
) -> dict:
    return run_study(
        store, DATASET, TrainParams(epochs=EPOCHS, imgsz=64), client, search,  # type: ignore[arg-type]
        storage=storage, train=train or Trainings(), measure=footprint,
        note=notes.append if notes is not None else None,
    )  # fmt: skip


def children(client, parent: str) -> dict[int, object]:
    runs = client.search_runs(
        [tracking.experiment_id(client)], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    return {int(r.data.tags["optuna_trial"]): r for r in runs}


def test_a_study_records_failed_pruned_and_infeasible_trials_and_returns_the_best_feasible(
    tmp_path, store, client
):
    # Grid order: (64, 0.02, n) complete; (64, 0.02, broken) fails; (64, 0.001, n) complete;
    # (64, 0.001, broken) fails; (640, 0.02, n) the best mAP but 64 ms; (640, 0.02, broken)
    # fails; (640, 0.001, n) below the median of the three complete ones at epoch 1: pruned.
    search = Search(
        trials=7, strategy="grid", pruner="median", max_latency_ms=10.0, max_file_mb=25.0,
        space={"imgsz": [64, 640], "lr0": [0.02, 0.001], "model_yaml": ["yolo11n.yaml",
                                                                      "broken.yaml"]},
    )  # fmt: skip
    notes: list[str] = []
    rec = study(store, client, search, storage_of(tmp_path), notes=notes)

    assert rec["params"]["imgsz"] == 64 and rec["params"]["lr0"] == 0.02  # not the 640 one
    # The study, in optuna.db beside mlflow.db, says what became of each trial.
    name = study_name(DATASET["version"], search, TrainParams(epochs=EPOCHS, imgsz=64), None)
    s = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state.name for t in s.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "FAIL", "COMPLETE", "FAIL", "PRUNED"]
    assert s.trials[4].constraints == {"latency_ms": 54.0, "size_mb": -20.0}  # 64 ms, 5 MiB
    assert s.best_trial.number == 0  # Optuna's own pick agrees: the best feasible
    assert "FileNotFoundError: broken.yaml does not exist" in s.trials[1].user_attrs["note"]
    # MLflow: one child run per trial, its end and its tags say the same.
    runs = children(client, rec["search_parent_run"])
    assert rec["mlflow_run_id"] == runs[0].info.run_id  # type: ignore[attr-defined]
    status = {n: (r.info.status, r.data.tags.get("optuna_state")) for n, r in runs.items()}  # type: ignore[attr-defined]
    assert status == {
        0: ("FINISHED", "complete"), 1: ("FAILED", "failed"), 2: ("FINISHED", "complete"),
        3: ("FAILED", "failed"), 4: ("FINISHED", "infeasible"), 5: ("FAILED", "failed"),
        6: ("KILLED", "pruned"),
    }  # fmt: skip
    infeasible = runs[4].data  # type: ignore[attr-defined]
    assert infeasible.tags["feasible"] == "false" and infeasible.metrics["onnx_latency_ms"] == 64
    assert infeasible.tags["optuna_study"] == name
    assert "does not exist" in runs[1].data.tags["error"]  # type: ignore[attr-defined]
    parent = client.get_run(rec["search_parent_run"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["optuna_study"] == name and parent.data.tags["optuna_best_trial"] == "0"
    assert parent.data.metrics["trials_failed"] == 3 and parent.data.metrics["trials_pruned"] == 1
    assert "mlflow.db" not in parent.data.tags["optuna_storage"]  # the study's file, not MLflow's
    # The table a person reads on yolo_model: every trial, its state and numbers, the best.
    table = rec["search_md"]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| trial")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[4] for c in cells] == ["complete", "failed", "complete", "failed", "infeasible",
                                     "failed", "pruned"]  # fmt: skip
    assert cells[0][:4] == ["0", "0.02", "64", "yolo11n.yaml"] and cells[0][8] == "best"
    assert cells[4][5:8] == ["4.0000", "64.00", "5.00"] and cells[4][8] == ""
    assert "pruned (median) at epoch 1/4" in cells[6][9]
    assert f"Optuna study `{name}`" in table and "latency <= 10 ms, size <= 25 MiB" in table
    assert any(n.startswith("trial 6 pruned") for n in notes)


def test_a_retried_study_runs_only_the_trials_it_has_not_settled(tmp_path, store, client):
    search = Search(trials=3, strategy="tpe", pruner="none", space={"lr0": [0.001, 0.02]})
    first = Trainings()
    study(store, client, search, storage_of(tmp_path), train=first)
    assert len(first.calls) == 3
    again = Trainings()
    rec = study(store, client, search, storage_of(tmp_path), train=again)
    assert again.calls == []  # all three settled: nothing trained again
    assert rec["reused"] is True  # the best's record, from the store
    more = Trainings()
    wider = dataclasses.replace(search, trials=5)
    study(store, client, wider, storage_of(tmp_path), more)
    assert len(more.calls) == 2  # the same study, two further trials
    lrs = {p.lr0 for p in first.calls + more.calls}
    assert len(lrs) == 5  # a resumed study does not draw its first points again


def test_no_feasible_trial_names_the_budgets_and_the_best_infeasible_trial(tmp_path, store, client):
    search = Search(
        trials=2, strategy="grid", pruner="none", max_latency_ms=0.001, max_file_mb=25.0,
        space={"lr0": [0.01, 0.02]},
    )  # fmt: skip
    with pytest.raises(NoFeasibleTrial) as e:
        study(store, client, search, storage_of(tmp_path))
    msg = str(e.value)
    assert "no trial of 2 met the mobile budgets (latency <= 0.001 ms, size <= 25 MiB" in msg
    assert "The best infeasible was trial 1 (lr0 0.02): val mAP50-95 2.0000, latency 6.40 ms" in msg
    assert "Nothing is promoted" in msg
    assert "| infeasible |" in e.value.search_md and "best" not in e.value.search_md
    name = study_name(DATASET["version"], search, TrainParams(epochs=EPOCHS, imgsz=64), None)
    (parent,) = client.search_runs(
        [tracking.experiment_id(client)],
        f"attributes.run_name = 'hpo_sweep' and tags.optuna_study = '{name}'",
    )
    assert parent.info.status == "FAILED" and parent.data.tags["optuna_best_trial"] == "none"


def test_a_study_whose_every_trial_fails_says_why(tmp_path, store, client):
    search = Search(trials=2, strategy="random", space={"model_yaml": ["broken.yaml"]})
    said = r"none of its 2 trials completed \(2 failed, 0 pruned\); trial 0 failed with Fi"
    with pytest.raises(NoFeasibleTrial, match=said + r"leNotFoundError: broken.yaml"):
        study(store, client, search, None)  # in memory


def test_the_epoch_reporter_prunes_below_the_median_but_never_the_last_epoch():
    s = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1)
    )
    done = s.ask()
    for epoch in (1, 2, 3):
        done.report(0.5 * epoch, epoch)
    s.tell(done, 1.5)
    seen = []
    weak = s.ask()
    report = epoch_reporter(weak, 3, "median", lambda e, row: seen.append(e))
    with pytest.raises(TrialPruned, match=r"pruned \(median\) at epoch 1/3: val mAP50-95 0.1000"):
        report(1, {VAL_METRIC: 0.1})
    assert seen == [1] and TrialPruned.mlflow_status == "KILLED"
    last = s.ask()
    report = epoch_reporter(last, 1, "median")
    report(1, {VAL_METRIC: 0.0})  # the last epoch: the trial is finished, nothing to save
    report(1, {"train/box_loss": 1.0})  # a row without validation is passed on, not reported


def test_search_settings_are_checked_naming_each_mistake():
    fields = {
        "trials": 3, "strategy": "bayes", "pruner": "asha", "timeout_s": -1.0, "seed": 0,
        "space": {"lr0": [0.0, 0.01], "imgsz": [16], "batch": [8], "model_yaml": []},
        "max_latency_ms": 0.0, "max_file_mb": None,
    }  # fmt: skip
    unchecked = object.__new__(Search)  # what construction would refuse, to list every problem
    for k, v in fields.items():
        object.__setattr__(unchecked, k, v)
    assert search_problems(unchecked) == [
        "search.strategy 'bayes': expected one of tpe, random, grid",
        "search.pruner 'asha': expected one of median, hyperband, none",
        "search.timeout -1.0: expected >= 0 (0: no limit)",
        "search space names 'batch': expected some of lr0, imgsz, model_yaml",
        "search.lr0 [0.0, 0.01]: every value must be > 0 (log scale)",
        "search.imgsz [16]: each must be at least 32 pixels",
        "search.model_yaml is empty: list at least one value",
        "mobile budget max_latency_ms 0.0: expected > 0",
    ]
    with pytest.raises(ValueError, match=r"search\.strategy 'bayes'"):
        Search(trials=1, strategy="bayes")
