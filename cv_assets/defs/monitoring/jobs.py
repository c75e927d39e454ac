"""Jobs of the monitoring group."""

import dagster as dg

from cv_assets.defs.ingest.partitions import batches

drift_job = dg.define_asset_job(
    "drift_job",
    selection=dg.AssetSelection.assets("drift_report"),
    partitions_def=batches,
    description="Drift report of one landed batch against the champion's training data.",
)
