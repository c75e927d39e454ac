"""The search on Optuna: a study of trainings, each an MLflow child run of one parent run.

- **Samplers.** ``tpe`` (seeded, multivariate, constrained: infeasible trials inform it as
  "worse"), ``random``, and ``grid``: the first ``trials`` points of the grid in the order they
  have always had, enqueued into the study.
- **Pruners.** ``median`` and ``hyperband`` hear each epoch's validation mAP50-95 through the
  training's ``progress`` callback; a trial they stop raises ``TrialPruned`` there, which ends
  Ultralytics' loop, and its MLflow run ends KILLED (not FAILED) and tagged ``pruned``. The last
  epoch is never pruned: the trial is finished by then.
- **Constraints.** Each completed trial's weights are exported to ONNX fp32 and measured as
  ``mobile_model`` measures them (the file's size; the median batch-1 latency on 2 CPU threads).
  Over a budget, the trial is infeasible (``Trial.set_constraint``: Optuna 5's replacement for
  ``constraints_func``), recorded, and never the challenger.
- **Faults.** A trial whose training or export fails is FAILED in the study and in MLflow, and
  the study goes on; only an unreachable tracking server stops it (the step retries).
- **Resuming.** The study's name depends on what its trials' results depend on
  (``search.study_name``), and it is kept beside MLflow's store (``studies.py``): a retried run
  finds its finished trials there and runs only the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.checkpoints import Checkpoints
from cv_assets.lib.training.records import YoloModel
from cv_assets.lib.training.search import (
    LOG_RANGES,
    VAL_METRIC,
    NoFeasibleTrial,
    Search,
    TrialRow,
    describe,
    grid_points,
    search_table,
    study_name,
)
from cv_assets.lib.training.studies import StudyStorage, open_study_storage
from cv_assets.lib.training.train import cache_key, train_and_record
from cv_assets.lib.training.yolo import TrainParams, verified_weights

log = logging.getLogger(__name__)

Progress = Callable[[int, dict[str, float]], None]
SETTLED = (TrialState.COMPLETE, TrialState.PRUNED)


class TrialPruned(optuna.TrialPruned):
    """The pruner stopped a trial. Raised from the epoch callback, it ends Ultralytics' loop;
    ``train_and_record`` ends the trial's MLflow run with ``mlflow_status``: the run was stopped
    on purpose, it did not fail."""

    mlflow_status = "KILLED"


class TrialFailed(Exception):
    """A trial's training or measurement failed: the study records it FAILED and goes on."""


def startup_trials(trials: int) -> int:
    """TPE samples at random until this many trials exist (Optuna's default is 10, too many
    for a sweep of a handful): half the budget, between 2 and 10."""
    return min(10, max(2, trials // 2))


def sampler_for(search: Search, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The strategy's sampler. ``offset`` (the trials the study already holds) moves the seed, so
    a resumed study does not draw its first trials' points again."""
    seed = search.seed + offset
    if search.strategy == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=startup_trials(search.trials)
        )
    # grid: its points are enqueued (enqueue_grid); the sampler only replays them.
    return optuna.samplers.RandomSampler(seed=seed)


def pruner_for(search: Search, epochs: int) -> optuna.pruners.BasePruner:
    """``median``: stop a trial whose val mAP50-95 is below the median of earlier trials at the
    same epoch, once 2 or more trials finished (up to 5 for long sweeps), and never in the first
    quarter of the epochs (warmup: every trial is near zero there). ``hyperband``: successive
    halving from an eighth of the epochs. ``none``: every trial runs to the end."""
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=max(2, min(5, search.trials // 4)), n_warmup_steps=epochs // 4
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, epochs // 8), max_resource=max(epochs, 1), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, search: Search) -> dict[str, Any]:
    """The trial's parameters: log-uniform in [min, max] for ``lr0`` under TPE and random, a
    choice among the listed values otherwise (grid enqueues its points, which these replay)."""
    out: dict[str, Any] = {}
    for k in sorted(search.space):
        values = list(dict.fromkeys(search.space[k]))
        if k in LOG_RANGES and search.strategy != "grid" and len(values) > 1:
            out[k] = trial.suggest_float(k, float(min(values)), float(max(values)), log=True)
        else:
            out[k] = trial.suggest_categorical(k, values)
    return out


def epoch_reporter(
    trial: optuna.Trial, epochs: int, pruner: str, progress: Progress | None = None
) -> Progress:
    """The training's ``progress`` callback: passes each epoch on, reports its val mAP50-95 to
    the study, and raises ``TrialPruned`` when the pruner says so (never at the last epoch)."""

    def report(epoch: int, row: dict[str, float]) -> None:
        if progress is not None:
            progress(epoch, row)
        value = row.get(VAL_METRIC)
        if value is None:
            return
        trial.report(float(value), epoch)
        trial.set_user_attr("last_val_map50_95", float(value))  # what a stopped trial reached
        if epoch < epochs and trial.should_prune():
            raise TrialPruned(
                f"pruned ({pruner}) at epoch {epoch}/{epochs}: val mAP50-95 {value:.4f}"
            )

    return report


def onnx_footprint(store: ArtifactStore, rec: YoloModel) -> tuple[float, float]:
    """The trial's weights as ``mobile_model`` would ship them first: ONNX fp32 (batch 1,
    simplified), its median latency in ms (2 CPU threads, on a random input: no image is read)
    and its size in MiB."""
    from cv_assets.lib.mobile.export import export_onnx, latency_ms

    w = rec["weights"]
    with scratch_dir("hpo_onnx") as tmp:
        weights = verified_weights(local_file(store, w["uri"], Path(tmp)), w["sha256"])
        path = export_onnx(weights, int(rec["params"]["imgsz"]), Path(tmp) / "export")
        return latency_ms(path), os.path.getsize(path) / 2**20


def violations(search: Search, latency: float, size_mb: float) -> dict[str, float]:
    """Optuna's constraint values: how far over each budget (<= 0: within)."""
    out = {}
    if search.max_latency_ms is not None:
        out["latency_ms"] = latency - search.max_latency_ms
    if search.max_file_mb is not None:
        out["size_mb"] = size_mb - search.max_file_mb
    return out


def feasible(t: FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def best_feasible(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The completed trial within every budget with the highest val mAP50-95 (then mAP50)."""
    ok = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    ok = [t for t in ok if feasible(t)]
    return max(ok, key=lambda t: (t.value, t.user_attrs.get("val_map50", 0.0)), default=None)


def state_of(t: FrozenTrial) -> str:
    if t.state == TrialState.COMPLETE:
        return "complete" if feasible(t) else "infeasible"
    return {TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(t.state, t.state.name)


def trial_rows(trials: list[FrozenTrial], best: FrozenTrial | None) -> list[TrialRow]:
    rows = []
    for t in trials:
        u = t.user_attrs
        val = t.value if t.state == TrialState.COMPLETE else u.get("last_val_map50_95")
        rows.append(
            TrialRow(
                t.number, dict(t.params), state_of(t), val, u.get("latency_ms"),
                u.get("size_mb"), best is not None and t.number == best.number, u.get("note", ""),
            )
        )  # fmt: skip
    return rows


def enqueue_grid(study: optuna.Study, search: Search) -> int:
    """Enqueues the grid points the study has not settled yet; how many trials to run."""

    def key(p: dict[str, Any]) -> str:
        return json.dumps(p, sort_keys=True, default=str)

    trials = study.get_trials(deepcopy=False)
    settled = {key(t.params) for t in trials if t.state in SETTLED}
    waiting = {
        key(t.system_attrs.get("fixed_params", {})) for t in trials if t.state == TrialState.WAITING
    }
    pending = [p for p in grid_points(search.space, search.trials) if key(p) not in settled]
    for p in pending:
        if key(p) not in waiting:
            study.enqueue_trial(p)
    return len(pending)


def no_feasible_message(name: str, search: Search, trials: list[FrozenTrial]) -> str:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        failed = [t for t in trials if t.state == TrialState.FAIL]
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        first = failed[0].user_attrs.get("note", "") if failed else ""
        why = f"; trial {failed[0].number} failed with {first}" if failed else ""
        return (
            f"hyperparameter study {name}: none of its {len(trials)} trials completed "
            f"({len(failed)} failed, {len(pruned)} pruned){why}. Nothing is promoted."
        )
    top = max(done, key=lambda t: t.value or 0.0)
    u = top.user_attrs
    return (
        f"hyperparameter study {name}: no trial of {len(trials)} met the mobile budgets "
        f"({search.budgets_text()}; ONNX fp32, batch 1, 2 CPU threads, as mobile_model measures). "
        f"The best infeasible was trial {top.number} ({describe(top.params)}): val mAP50-95 "
        f"{top.value:.4f}, latency {u.get('latency_ms', float('nan')):.2f} ms, size "
        f"{u.get('size_mb', float('nan')):.2f} MiB. Nothing is promoted: loosen mobile_model's "
        "max_latency_ms / max_file_mb, or search smaller models (model_yaml, imgsz)."
    )


def _stored_record(store: ArtifactStore, t: FrozenTrial) -> YoloModel:
    """The record of a trial an earlier attempt settled (its weights were not made now)."""
    rec: YoloModel = json.loads(store.get_bytes(t.user_attrs["record_key"]))
    rec["reused"] = True
    return rec


def _end(client: Any, run_id: str, status: str) -> None:
    try:
        client.set_terminated(run_id, status)
    except Exception as e:  # the run's status is secondary to the error being raised
        log.warning("could not end MLflow run %s as %s: %s", run_id, status, type(e).__name__)


def _child_of(client: Any, parent: str, number: int) -> str | None:
    """The MLflow run of trial ``number`` under ``parent`` (None: training never started one)."""
    runs = client.search_runs(
        [tracking.experiment_id(client)],
        f"tags.`mlflow.parentRunId` = '{parent}' and tags.optuna_trial = '{number}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def run_study(
    store: ArtifactStore,
    dataset: TrainingDataset,
    params: TrainParams,
    client: Any,
    search: Search,
    *,
    force: bool = False,
    warm_start: tuple[Path, str] | None = None,
    code_version: str = "",
    run_tags: dict[str, str] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    storage: StudyStorage | None = None,
    train: Callable[..., YoloModel] = train_and_record,
    measure: Callable[[ArtifactStore, YoloModel], tuple[float, float]] = onnx_footprint,
) -> YoloModel:
    """Runs (or resumes) the study and returns the best feasible trial's record with the
    study's table (``search_md``) and parent run (``search_parent_run``).

    ``train`` is ``train_and_record`` and ``measure`` is ``onnx_footprint``; the benchmark and
    the unit tests pass their own.

    Raises:
        NoFeasibleTrial: no trial completed within the budgets; the message names the budgets and
            the best infeasible trial, and carries the table.
    """
    tell = note or log.info
    where = storage or StudyStorage(None, "memory (this process only)")
    warm_sha = warm_start[1] if warm_start else None
    name = study_name(dataset["version"], search, params, warm_sha)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the notes below say what it would
    study = optuna.create_study(
        study_name=name,
        storage=open_study_storage(where),
        direction="maximize",
        pruner=pruner_for(search, params.epochs),
        load_if_exists=True,
    )
    before = study.get_trials(deepcopy=False)
    study.sampler = sampler_for(search, offset=len(before))
    study.set_user_attr("dataset_version", dataset["version"])
    study.set_user_attr("search", search.as_dict())
    if search.strategy == "grid":
        to_run = enqueue_grid(study, search)
    else:
        to_run = max(0, search.trials - sum(t.state in SETTLED for t in before))
    tags = dict(run_tags or {})
    parent = tracking.start_run(
        client,
        "hpo_sweep",
        {"dataset_version": dataset["version"], "optuna_study": name,
         "optuna_storage": where.where} | tags,
    )  # fmt: skip
    tracking.log_params(
        client,
        parent,
        {"strategy": search.strategy, "pruner": search.pruner, "trials": search.trials,
         "seed": search.seed, "space": json.dumps(search.as_dict()["space"], sort_keys=True),
         "budgets": search.budgets_text(), "epochs": params.epochs},
    )  # fmt: skip
    done = sum(t.state in SETTLED for t in before)
    tell(
        f"study {name} ({search.strategy}, pruner {search.pruner}) in {where.where}: "
        f"{done} trial(s) settled before, {to_run} to run"
    )
    records: dict[int, YoloModel] = {}

    def _settled(trial: optuna.Trial, state: str, why: str) -> None:
        trial.set_user_attr("note", why[:300])
        tell(f"trial {trial.number} {state}: {why}")
        try:
            if child := _child_of(client, parent, trial.number):
                client.set_tag(child, "optuna_state", state)
                if state == "failed":
                    client.set_tag(child, "error", why[:500])
        except Exception as e:  # tagging is secondary to the trial's outcome
            log.warning("could not tag trial %d's run: %s", trial.number, type(e).__name__)

    def objective(trial: optuna.Trial) -> float:
        chosen = suggest(trial, search)
        tp = dataclasses.replace(params, **chosen)
        tell(f"trial {trial.number}: {describe(chosen)}")
        trial_tags = tags | {"optuna_study": name, "optuna_trial": str(trial.number)}
        reporter = epoch_reporter(trial, tp.epochs, search.pruner, progress)
        try:
            rec = train(
                store, dataset, tp, client, force=force, warm_start=warm_start,
                code_version=code_version, parent_run=parent, run_name=f"trial-{trial.number}",
                run_tags=trial_tags, progress=reporter, say=say,
            )  # fmt: skip
        except TrialPruned as e:
            _settled(trial, "pruned", str(e))
            # A trial stopped on purpose is not resumed: its checkpoint would only take space.
            Checkpoints(store, cache_key(dataset["version"], tp, warm_sha)).clear()
            raise
        except tracking.TrackingUnavailable:
            raise  # not the trial's fault: the step retries
        except Exception as e:
            _settled(trial, "failed", f"{type(e).__name__}: {e}")
            raise TrialFailed(str(e)) from e
        records[trial.number] = rec
        attrs = {"record_key": layout.model_record(rec["key"]), "reused": rec["reused"],
                 "mlflow_run_id": rec["mlflow_run_id"], "val_map50": rec["val_map50"]}  # fmt: skip
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        child = None if rec["reused"] else rec["mlflow_run_id"]
        state, line = "complete", f"val mAP50-95 {rec['val_map50_95']:.4f}"
        if search.constrained:
            try:
                lat, size = measure(store, rec)
            except Exception as e:
                _settled(trial, "failed", f"ONNX export: {type(e).__name__}: {e}")
                raise TrialFailed(str(e)) from e
            over = violations(search, lat, size)
            for k, v in over.items():
                trial.set_constraint(k, v)
            ok = all(v <= 0 for v in over.values())
            trial.set_user_attr("latency_ms", lat)
            trial.set_user_attr("size_mb", size)
            if not ok:
                trial.set_user_attr("note", f"over budget ({search.budgets_text()})")
            state = "complete" if ok else "infeasible"
            line += f", latency {lat:.2f} ms, {size:.2f} MiB, {'feasible' if ok else 'INFEASIBLE'}"
            if child:
                tracking.log_metrics(client, child, {"onnx_latency_ms": lat, "onnx_size_mb": size})
                client.set_tag(child, "feasible", str(ok).lower())
        if rec["reused"]:
            trial.set_user_attr("note", "weights reused (same dataset and parameters)")
        if child:
            client.set_tag(child, "optuna_state", state)
        tell(f"trial {trial.number} {state}: {line}")
        return rec["val_map50_95"]

    try:
        if to_run:
            study.optimize(
                objective, n_trials=to_run, timeout=search.timeout_s or None,
                catch=(TrialFailed,), gc_after_trial=True,
            )  # fmt: skip
    except BaseException:
        _end(client, parent, "FAILED")
        raise
    trials = study.get_trials()
    best = best_feasible(trials)
    table = search_table(name, search, trial_rows(trials, best))
    counts = {s: sum(state_of(t) == s for t in trials)
              for s in ("complete", "infeasible", "pruned", "failed")}  # fmt: skip
    tracking.log_metrics(client, parent, {f"trials_{k}": v for k, v in counts.items()})
    client.log_text(parent, table, "search.md")
    if best is None:
        client.set_tag(parent, "optuna_best_trial", "none")
        _end(client, parent, "FAILED")
        raise NoFeasibleTrial(no_feasible_message(name, search, trials), table)
    rec = records.get(best.number) or _stored_record(store, best)
    client.set_tag(parent, "optuna_best_trial", str(best.number))
    tracking.log_metrics(client, parent, {"best_val_map50_95": rec["val_map50_95"]})
    client.set_terminated(parent, "FINISHED")
    tell(f"study {name}: best feasible trial {best.number} ({describe(best.params)})")
    rec["search_md"], rec["search_parent_run"] = table, parent
    return rec
