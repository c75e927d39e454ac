"""Everything of the mobile group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.mobile.assets import mobile_model
from cv_assets.defs.mobile.release import app_release
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    """No definition of this group depends on the platform's configuration yet."""
    del cfg
    return dg.Definitions(assets=[mobile_model, app_release])
