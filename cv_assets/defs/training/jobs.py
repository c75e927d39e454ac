"""Jobs of the training group: a plain retrain, and a hyperparameter sweep through the same gate."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported at the top
)

from cv_assets.lib.core.settings import PlatformConfig

TRAINING_ASSETS = dg.AssetSelection.assets(
    "training_dataset",
    "yolo_model",
    "model_evaluation",
    "mobile_model",
    "champion_model",
    "app_release",
)


# max_runtime lets run monitoring fail a run whose worker was killed, freeing its slots. A
# deployment adds its own (CV_ASSETS_TRAINING_RUN_TAGS): the GPU pool its training pod or task
# runs on, the queue's limit per pool. The GPU itself is the training process's, not the run's
# (CV_ASSETS_TRAINING_LAUNCHER). Every training run carries them, however it was started.
def training_tags(cfg: PlatformConfig) -> dict[str, str]:
    return dict(cfg.training_run_tags) | {
        "cv_assets/stage": "training",
        "dagster/max_runtime": str(4 * 3600),
    }


# hpo_sweep's default: TPE over lr0 (SearchConfig's range) with median pruning, four trials.
HPO_SWEEP = {"trials": 4, "strategy": "tpe", "pruner": "median"}


def training_jobs(cfg: PlatformConfig) -> list[UnresolvedAssetJobDefinition]:
    """``training_job`` and ``hpo_sweep``, both carrying the deployment's training run tags."""
    tags = training_tags(cfg)
    training_job = dg.define_asset_job(
        "training_job",
        selection=TRAINING_ASSETS,
        description="Snapshot the dataset, train a challenger, gate it against the champion, "
        "convert it for the app and prove each file, register and promote.",
        tags=tags,
    )
    hpo_sweep = dg.define_asset_job(
        "hpo_sweep",
        selection=TRAINING_ASSETS,
        description="An Optuna study of K trainings (MLflow child runs) on one dataset version, "
        "weak ones pruned per epoch, each held to the mobile budgets; the best feasible by "
        "validation mAP50-95 goes through the same gate as any challenger.",
        tags=tags,
        config={"ops": {"yolo_model": {"config": {"search": HPO_SWEEP}}}},
    )
    return [training_job, hpo_sweep]
