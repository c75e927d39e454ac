"""Jobs of the monitoring group."""

import dagster as dg

batch_monitoring_job = dg.define_asset_job(
    "batch_monitoring_job",
    # The champion's proposals for the batch's unlabelled images ride along: same inputs, same
    # moment, and one run per batch keeps the daemon's queue short.
    # The field assets are of the group but about app telemetry, not batches: their own jobs
    # (defs/monitoring/field.py and audit.py).
    selection=(
        dg.AssetSelection.groups("monitoring")
        - dg.AssetSelection.assets("field_drift", "field_samples", "field_accuracy")
    )
    | dg.AssetSelection.assets("pre_annotations"),
    description="What one landed batch says about the champion: drift of its features and "
    "confidences, the champion's live accuracy on it, the labels to review, and its proposals "
    "for the unlabelled images.",
)
