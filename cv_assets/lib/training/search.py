"""Hyperparameter search: K trainings of one dataset version as MLflow child runs of one parent,
chosen by an Optuna study; the best feasible one by validation mAP50-95 is the challenger, and
goes through the same gate as any.

This module holds what the search *is* (its settings, the grid, the study's name, the table a
person reads) and imports no Optuna; ``hpo.py`` runs the study. Only the train and val splits are
ever read while tuning: the objective is Ultralytics' validation mAP50-95 on the val split, and
the mobile constraints are measured on a random input (no image at all). The test split stays for
``model_evaluation``'s gate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.training.records import YoloModel
from cv_assets.lib.training.studies import StudyStorage
from cv_assets.lib.training.train import TRAIN_CODE_VERSION, train_and_record
from cv_assets.lib.training.yolo import TrainParams

STRATEGIES = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
# The TrainParams fields a search space may name, and those that TPE and random search sample
# log-uniformly between the smallest and the largest listed value (grid takes the values as
# listed); the others are categorical choices.
SPACE_FIELDS = ("lr0", "imgsz", "model_yaml")
LOG_RANGES = ("lr0",)
# What Ultralytics calls the validation mAP50-95 in an epoch's row: the objective.
VAL_METRIC = "metrics/mAP50-95(B)"


class NoFeasibleTrial(RuntimeError):
    """No trial of the study completed within the budgets: there is no challenger to gate.

    ``search_md`` is the study's table, for the step's metadata.
    """

    def __init__(self, message: str, search_md: str = "") -> None:
        super().__init__(message)
        self.search_md = search_md


@dataclasses.dataclass(frozen=True)
class Search:
    """A search's settings, as the worker receives them (``as_dict`` travels as JSON).

    ``max_latency_ms`` and ``max_file_mb`` are ``mobile_model``'s budgets, or None for a search
    that does not judge the exported file.
    """

    trials: int  # 0: train once
    strategy: str = "tpe"
    space: Mapping[str, list[Any]] = dataclasses.field(default_factory=dict)
    seed: int = 0
    pruner: str = "median"
    timeout_s: float = 0.0  # stop starting trials after this long; 0: no limit
    max_latency_ms: float | None = None
    max_file_mb: float | None = None

    def __post_init__(self) -> None:
        problems = search_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def constrained(self) -> bool:
        return self.max_latency_ms is not None or self.max_file_mb is not None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["space"] = {k: list(v) for k, v in self.space.items()}
        return d

    def budgets_text(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_file_mb is not None:
            parts.append(f"size <= {self.max_file_mb:g} MiB")
        return ", ".join(parts) or "no budgets"


def search_problems(s: Search) -> list[str]:
    """What is wrong with a search's settings, each naming the setting and the rule."""
    out = []
    if s.strategy not in STRATEGIES:
        out.append(f"search.strategy {s.strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if s.pruner not in PRUNERS:
        out.append(f"search.pruner {s.pruner!r}: expected one of {', '.join(PRUNERS)}")
    if s.timeout_s < 0:
        out.append(f"search.timeout {s.timeout_s}: expected >= 0 (0: no limit)")
    if s.trials > 0 and not s.space:
        out.append("the search space is empty: list lr0, imgsz or model_yaml values to try")
    for name in sorted(set(s.space) - set(SPACE_FIELDS)):
        out.append(f"search space names {name!r}: expected some of {', '.join(SPACE_FIELDS)}")
    for name, values in s.space.items():
        if not values:
            out.append(f"search.{name} is empty: list at least one value")
        elif name in LOG_RANGES and min(values) <= 0:
            out.append(f"search.{name} {list(values)}: every value must be > 0 (log scale)")
        elif name == "imgsz" and min(values) < 32:
            out.append(f"search.imgsz {list(values)}: each must be at least 32 pixels")
    for name, v in (("max_latency_ms", s.max_latency_ms), ("max_file_mb", s.max_file_mb)):
        if v is not None and v <= 0:
            out.append(f"mobile budget {name} {v}: expected > 0")
    return out


def grid_points(space: Mapping[str, list[Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` points of the grid, in the order it has always had: the fields sorted
    by name, the last one varying fastest, each field's values as listed."""
    keys = sorted(space)
    values = [list(dict.fromkeys(space[k])) for k in keys]
    points = (dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values))
    return list(itertools.islice(points, max(limit, 0)))


def study_name(
    dataset_version: str, search: Search, params: TrainParams, warm_start_sha: str | None
) -> str:
    """The study's name: the same for everything a trial's result depends on, so a retried run
    (or a run with more ``trials``) resumes the study instead of training its trials again.

    The trial count and the time limit are left out: they say how far to go, not what is found.
    """
    searched = {k: v for k, v in search.as_dict().items() if k not in ("trials", "timeout_s")}
    body = {
        "dataset": dataset_version,
        "search": searched,
        "params": {k: v for k, v in params.as_params().items() if k not in search.space},
        "warm_start": warm_start_sha,
        "code": TRAIN_CODE_VERSION,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f"cv_assets-{dataset_version[:12]}-{digest[:12]}"


@dataclasses.dataclass
class TrialRow:
    """One trial as the search's table shows it."""

    number: int
    params: dict[str, Any]
    state: str  # complete, infeasible, pruned, failed, running, waiting
    val_map50_95: float | None = None
    latency_ms: float | None = None
    size_mb: float | None = None
    best: bool = False
    note: str = ""


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def search_table(study: str, search: Search, rows: list[TrialRow]) -> str:
    """The markdown a person reads on ``yolo_model``: the study, then one row per trial."""
    keys = [k for k in SPACE_FIELDS if k in search.space]
    header = ["trial", *keys, "state", "val mAP50-95", "latency ms", "size MiB", "", "note"]
    body = [
        (
            r.number,
            *(_param(r.params.get(k)) for k in keys),
            r.state,
            _num(r.val_map50_95, 4),
            _num(r.latency_ms, 2),
            _num(r.size_mb, 2),
            "best" if r.best else "",
            r.note[:120],
        )
        for r in rows
    ]
    head = (
        f"Optuna study `{study}`: {search.strategy}, pruner {search.pruner}, "
        f"{len(rows)} trials; mobile budgets: {search.budgets_text()}\n\n"
    )
    return head + md_table(body, header)


def _param(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def describe(params: Mapping[str, Any]) -> str:
    """``lr0 0.00213, imgsz 64, model_yaml yolo11n.yaml``."""
    return ", ".join(f"{k} {_param(v)}" for k, v in sorted(params.items()))


def train_searching(
    store: ArtifactStore,
    dataset: TrainingDataset,
    params: TrainParams,
    mlflow_client: Any,
    search: Search,
    *,
    force: bool = False,
    warm_start: tuple[Path, str] | None = None,
    code_version: str = "",
    run_tags: dict[str, str] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    say: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    storage: StudyStorage | None = None,
) -> YoloModel:
    """One training, or a study of ``search.trials`` of them (``hpo.run_study``) whose best
    feasible trial's record comes back with the study's table (``search_md``) and parent run.

    ``say`` hears what a user should know about a training (``train_and_record``'s: a resume, a
    refused checkpoint); ``note`` hears one line per trial of a study; ``storage`` is where the
    study is kept (in memory when None).
    """
    common: dict[str, Any] = {
        "force": force,
        "warm_start": warm_start,
        "code_version": code_version,
        "run_tags": run_tags,
        "progress": progress,
        "say": say,
    }
    if search.trials <= 0:
        return train_and_record(store, dataset, params, mlflow_client, **common)
    from cv_assets.lib.training.hpo import run_study  # Optuna: only a search pays its import

    return run_study(
        store, dataset, params, mlflow_client, search, note=note, storage=storage, **common
    )
