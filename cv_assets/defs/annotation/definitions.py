"""Everything of the annotation group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.annotation.assets import pre_annotations
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    """No definition of this group depends on the platform's configuration yet."""
    del cfg
    return dg.Definitions(assets=[pre_annotations])
