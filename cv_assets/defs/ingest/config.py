"""Run configuration of the intake assets (shown in the launchpad, with defaults)."""

import dagster as dg
from pydantic import Field

from cv_assets.lib.images import ImageLimits


class IntakeConfig(dg.Config):
    min_acceptance_rate: float = Field(
        default=0.5, description="acceptance_rate_ok fails, and blocks downstream, below this rate"
    )
    max_image_bytes: int = Field(
        default=25 * 1024 * 1024, description="larger image files are quarantined (too_large)"
    )
    max_image_pixels: int = Field(
        default=40_000_000,
        description="images whose header claims more pixels are quarantined undecoded",
    )
    max_side: int = Field(
        default=1280, description="standardised images are scaled down to this longest side"
    )

    def limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.max_side,
        )
