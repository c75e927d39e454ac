"""Everything of the training group, as one ``Definitions`` object."""

import dagster as dg

from cv_assets.defs.training.assets import champion_model, model_evaluation, yolo_model
from cv_assets.defs.training.jobs import hpo_sweep, training_job

defs = dg.Definitions(
    assets=[yolo_model, model_evaluation, champion_model], jobs=[training_job, hpo_sweep]
)
