"""Jobs of the monitoring group."""

import dagster as dg

batch_monitoring_job = dg.define_asset_job(
    "batch_monitoring_job",
    selection=dg.AssetSelection.groups("monitoring"),
    description="What one landed batch says about the champion: drift of its features and "
    "confidences, the champion's live accuracy on it, and the labels to review.",
)
