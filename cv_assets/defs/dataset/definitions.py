"""Everything of the dataset group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.dataset.assets import training_dataset
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    """No definition of this group depends on the platform's configuration yet."""
    del cfg
    return dg.Definitions(assets=[training_dataset])
