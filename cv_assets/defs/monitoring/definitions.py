"""Everything of the monitoring group, as one ``Definitions`` object for a configuration."""

import dagster as dg

from cv_assets.defs.monitoring.assets import drift_report
from cv_assets.defs.monitoring.audit import audit_sensor, field_accuracy, field_accuracy_job
from cv_assets.defs.monitoring.field import (
    field_day_sensor,
    field_drift,
    field_monitoring_job,
    field_samples,
)
from cv_assets.defs.monitoring.jobs import batch_monitoring_job
from cv_assets.defs.monitoring.performance import champion_performance
from cv_assets.defs.monitoring.review import review_queue
from cv_assets.defs.monitoring.sensors import validated_batch_sensor
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            drift_report,
            champion_performance,
            review_queue,
            field_drift,
            field_samples,
            field_accuracy,
        ],
        jobs=[batch_monitoring_job, field_monitoring_job, field_accuracy_job],
        sensors=[validated_batch_sensor(cfg), field_day_sensor(cfg), audit_sensor(cfg)],
    )
