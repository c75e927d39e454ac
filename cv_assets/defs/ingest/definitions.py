"""Everything of the ingest group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.ingest.assets import intake, raw_batch
from cv_assets.defs.ingest.jobs import intake_job
from cv_assets.defs.ingest.sensors import landing_sensor
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_batch, intake], jobs=[intake_job], sensors=[landing_sensor(cfg)]
    )
