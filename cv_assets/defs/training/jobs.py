"""Jobs of the training group: a plain retrain, and a hyperparameter sweep through the same gate."""

import dagster as dg

from cv_assets.lib.core.settings import PlatformConfig

TRAINING_ASSETS = dg.AssetSelection.assets(
    "training_dataset", "yolo_model", "model_evaluation", "mobile_model", "champion_model"
)

# max_runtime lets run monitoring fail a run whose worker was killed, freeing its slots. A
# deployment adds its own (CV_ASSETS_TRAINING_RUN_TAGS): the GPU pool, dagster-k8s/config with a
# GPU node selector, ECS overrides. Every training run carries them, however it was started.
TRAINING_TAGS = dict(PlatformConfig.from_env().training_run_tags) | {
    "cv_assets/stage": "training",
    "dagster/max_runtime": str(4 * 3600),
}

training_job = dg.define_asset_job(
    "training_job",
    selection=TRAINING_ASSETS,
    description="Snapshot the dataset, train a challenger, gate it against the champion, convert "
    "it for the app and prove each file, register and promote.",
    tags=TRAINING_TAGS,
)

hpo_sweep = dg.define_asset_job(
    "hpo_sweep",
    selection=TRAINING_ASSETS,
    description="Train K configurations (MLflow child runs) on one dataset version; the best by "
    "validation mAP goes through the same gate as any challenger.",
    tags=TRAINING_TAGS,
    config={"ops": {"yolo_model": {"config": {"search": {"trials": 3, "strategy": "grid"}}}}},
)
