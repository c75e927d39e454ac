"""Everything of the training group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.training.assets import training_assets
from cv_assets.defs.training.jobs import training_jobs
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    return dg.Definitions(assets=training_assets(cfg), jobs=training_jobs(cfg))
