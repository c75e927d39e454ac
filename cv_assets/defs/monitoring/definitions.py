"""Everything of the monitoring group, as one ``Definitions`` object."""

import dagster as dg

from cv_assets.defs.monitoring.assets import drift_report
from cv_assets.defs.monitoring.jobs import drift_job
from cv_assets.defs.monitoring.sensors import drift_sensor, validated_batch_sensor

defs = dg.Definitions(
    assets=[drift_report], jobs=[drift_job], sensors=[validated_batch_sensor, drift_sensor]
)
