"""Sensors of the monitoring group: a drift report for every validated batch, and retraining
when a report says the world has changed."""

import time
from datetime import UTC, datetime

import dagster as dg

from cv_assets.defs.monitoring.jobs import drift_job
from cv_assets.defs.training.jobs import training_job
from cv_assets.lib.registry import read_champion
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings


@dg.asset_sensor(
    asset_key=dg.AssetKey("validated_batch"),
    job=drift_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests drift_report for each newly validated batch, once a champion exists.",
)
def validated_batch_sensor(
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    artifacts: ArtifactStoreResource,
):
    mat = asset_event.asset_materialization
    if mat is None or mat.partition is None:
        return dg.SkipReason("not a batch materialization")
    # The published pointer, not MLflow: a tick must stay cheap.
    champ = read_champion(artifacts.store)
    if champ is None:
        return dg.SkipReason(f"{mat.partition}: no champion yet, nothing to measure drift against")
    return dg.RunRequest(
        run_key=f"drift:{mat.partition}:{asset_event.timestamp}",
        partition_key=mat.partition,
        tags={"cv_assets/trigger": "validated_batch", "cv_assets/champion": champ["version"]},
    )


@dg.asset_sensor(
    asset_key=dg.AssetKey("drift_report"),
    job=training_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests retraining when a batch's drift report is flagged: one run per drift "
    "event (batch x champion), and none within the cooldown after the last training run.",
)
def drift_sensor(
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    settings: PlatformSettings,
):
    mat = asset_event.asset_materialization
    if mat is None or mat.partition is None:
        return dg.SkipReason("not a batch drift report")
    meta = {k: v.value for k, v in mat.metadata.items()}
    if not meta.get("drifted"):
        return dg.SkipReason(f"{mat.partition}: drift share {meta.get('drift_share')}, no drift")
    since = time.time() - settings.retrain_cooldown_s
    recent = context.instance.get_runs(
        dg.RunsFilter(job_name=training_job.name, created_after=datetime.fromtimestamp(since, UTC)),
        limit=1,
    )
    if recent:
        return dg.SkipReason(
            f"{mat.partition} drifted, but training run {recent[0].run_id[:8]} started within "
            f"the {settings.retrain_cooldown_s} s cooldown; its dataset includes this batch"
        )
    champion = str(meta.get("champion_version"))
    return dg.RunRequest(
        run_key=f"drift:{mat.partition}:v{champion}",
        tags={
            "cv_assets/trigger": "drift",
            "cv_assets/drift_batch": mat.partition,
            "cv_assets/drift_columns": str(meta.get("drifted_columns", "")),
        },
    )
