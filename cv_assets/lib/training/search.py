"""Hyperparameter search: K trainings on one dataset version as MLflow child runs of one parent,
the best by validation mAP kept. The challenger it returns goes through the same gate as any."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.records import YoloModel
from cv_assets.lib.training.train import train_and_record
from cv_assets.lib.training.yolo import TrainParams

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Search:
    trials: int  # 0: train once
    strategy: str  # "grid" or "random"
    space: dict[str, list[Any]]  # TrainParams field -> the values to try
    seed: int = 0


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
) -> YoloModel:
    """One training, or ``search.trials`` of them keeping the best by validation mAP50-95; the
    record of a search carries its table (``search_md``) and parent run."""
    common: dict[str, Any] = {
        "force": force,
        "warm_start": warm_start,
        "code_version": code_version,
        "run_tags": run_tags,
        "progress": progress,
    }
    if search.trials <= 0:
        return train_and_record(store, dataset, params, mlflow_client, **common)
    tags = run_tags or {}
    parent = tracking.start_run(
        mlflow_client, "hpo_sweep", {"dataset_version": dataset["version"]} | tags
    )
    trials = []
    overrides = search_space(search.strategy, search.trials, search.space, search.seed)
    for i, override in enumerate(overrides):
        log.info("trial %d/%d: %s", i + 1, search.trials, override)
        trial = dataclasses.replace(params, **override)
        trials.append(
            train_and_record(
                store, dataset, trial, mlflow_client, parent_run=parent,
                run_name=f"trial-{i + 1}", **common,
            )
        )  # fmt: skip
    mlflow_client.set_terminated(parent, "FINISHED")
    best = max(trials, key=lambda r: (r["val_map50_95"], r["val_map50"]))
    rows = [
        (
            t["params"]["model_yaml"],
            t["params"]["imgsz"],
            t["params"]["lr0"],
            round(t["val_map50"], 3),
            round(t["val_map50_95"], 3),
            "best" if t is best else "",
        )
        for t in trials
    ]
    table = md_table(rows, ["model", "imgsz", "lr0", "val mAP50", "val mAP50-95", ""])
    return best | {"search_md": table, "search_parent_run": parent}


def search_space(
    strategy: str, trials: int, space: dict[str, list[Any]], seed: int = 0
) -> list[dict[str, Any]]:
    """``trials`` parameter overrides: the first ``trials`` grid points, or a seeded sample."""
    keys = sorted(space)
    grid = [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(space[k] for k in keys))
    ]
    if strategy == "grid":
        return grid[:trials]
    if strategy == "random":
        rng = random.Random(seed)
        return rng.sample(grid, min(trials, len(grid)))
    raise ValueError(f"search strategy {strategy!r}: expected 'grid' or 'random'")
