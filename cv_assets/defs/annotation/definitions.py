"""Everything of the annotation group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.annotation.assets import pre_annotations
from cv_assets.defs.annotation.rounds import annotation_round
from cv_assets.defs.annotation.sensors import labelstudio_sensor
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    """The proposals, the round a person labels, and the sensor that collects it."""
    round_job = dg.define_asset_job(
        "annotation_round_job",
        selection=[annotation_round.key],
        description="Starts an annotation round: k pool images pushed to Label Studio "
        "(`cv-assets annotate start`).",
    )
    return dg.Definitions(
        assets=[pre_annotations, annotation_round],
        jobs=[round_job],
        sensors=[labelstudio_sensor(cfg)],
    )
