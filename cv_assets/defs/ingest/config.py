"""Run configuration of the intake assets (shown in the launchpad, with defaults)."""

import dagster as dg
from pydantic import Field

from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.labels import LabelLimits
from cv_assets.lib.ingest.landing import MAX_CLASSES


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
    max_label_bytes: int = Field(
        default=1024 * 1024,
        description="larger label files are quarantined unread (label_too_large)",
    )
    max_boxes_per_image: int = Field(
        default=1000,
        description="label files with more boxes (non-blank lines) are quarantined unparsed "
        "(too_many_boxes)",
    )
    max_annotation_bytes: int = Field(
        default=64 * 1024 * 1024,
        description="an annotation file (COCO, VOC, CVAT, Label Studio) larger than this is "
        "quarantined unread (annotation_too_large)",
    )
    max_classes: int = Field(
        default=MAX_CLASSES,
        description="a batch.json declaring more classes is refused; landing_sensor applies "
        "this default (sensors take no run config), a run re-checks with the value set here",
    )

    def limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.max_side,
        )

    def label_limits(self) -> LabelLimits:
        return LabelLimits(max_bytes=self.max_label_bytes, max_boxes=self.max_boxes_per_image)
