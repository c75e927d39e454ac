"""The intake job that ``landing_sensor`` launches for one batch partition."""

import dagster as dg

intake_job = dg.define_asset_job(
    "intake_job",
    selection=dg.AssetSelection.assets("raw_batch", "validated_batch", "batch_features"),
    description="Copy, validate and measure one landed batch.",
    tags={"cv_assets/stage": "intake", "dagster/max_runtime": str(3600)},
)
