"""Run configuration of the drift report (shown in the launchpad, with defaults)."""

import dagster as dg
from pydantic import Field

from cv_assets.lib.monitoring.drift import DriftSettings


class DriftConfig(dg.Config):
    column_threshold: float = Field(
        default=DriftSettings.column_threshold,
        description="K-S p-value under which one column counts as drifted",
    )
    drift_share: float = Field(
        default=DriftSettings.drift_share,
        description="share of drifted columns at which the batch is flagged",
    )
    max_rows: int = Field(
        default=DriftSettings.max_rows, description="reference and batch are sampled to this"
    )
    max_prediction_images: int = Field(
        default=300, description="images the champion predicts on, per side (prediction drift)"
    )

    def settings(self) -> DriftSettings:
        return DriftSettings(self.column_threshold, self.drift_share, self.max_rows)
