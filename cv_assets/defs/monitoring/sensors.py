"""``validated_batch_sensor``: every newly validated batch is monitored against the champion.

It reads new materializations after a storage-id cursor, every one of them (an asset sensor would
see only the newest per tick, and batches arrive in bursts). The run key names the batch's
materialization, so a daemon restart cannot monitor a batch twice.
"""

import dagster as dg

from cv_assets.defs.automation.sensors import new_materializations
from cv_assets.defs.monitoring.jobs import batch_monitoring_job
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.tracking.registry import read_champion
from cv_assets.resources.storage import ArtifactStoreResource


def validated_batch_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    return dg.sensor(
        name="validated_batch_sensor",
        job=batch_monitoring_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        description="Requests drift, live accuracy and review queue for each newly validated "
        "batch, once a champion exists.",
    )(validated_batch_tick)


def validated_batch_tick(
    context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource
) -> dg.SensorResult:
    # The published pointer, not MLflow: a tick must stay cheap.
    champ = read_champion(artifacts.store)
    requests, cursor, skipped = [], context.cursor, []
    for storage_id, mat in new_materializations(context, "validated_batch"):
        cursor = str(storage_id)
        if mat.partition is None:
            continue
        if champ is None:
            skipped.append(mat.partition)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"monitor:{mat.partition}:{storage_id}",
                partition_key=mat.partition,
                tags={
                    "cv_assets/trigger": "validated_batch",
                    "cv_assets/champion": champ["version"],
                },
            )
        )
    if skipped:
        context.log.info(f"no champion yet, nothing to monitor against for {', '.join(skipped)}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)
