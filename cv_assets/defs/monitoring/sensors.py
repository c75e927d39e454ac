"""Sensors of the monitoring group: a drift report for every validated batch, and retraining
when a report says the world has changed.

Both read new materializations from the instance's event log after a storage-id cursor, every
one of them (an asset sensor would see only the newest per tick, and batches arrive in bursts).
Run keys make a request idempotent, so a daemon restart cannot run anything twice.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from cv_assets.defs.monitoring.jobs import drift_job
from cv_assets.defs.training.jobs import training_job
from cv_assets.lib.registry import read_champion
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings

PAGE = 200


def _new_materializations(
    context: dg.SensorEvaluationContext, asset: str
) -> Iterator[tuple[int, dg.AssetMaterialization]]:
    """(storage id, materialization) of ``asset`` after the cursor, oldest first."""
    after = int(context.cursor) if context.cursor else None
    res = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after),
        limit=PAGE,
        ascending=True,
    )
    for rec in res.records:
        if rec.asset_materialization is not None:
            yield rec.storage_id, rec.asset_materialization


@dg.sensor(
    job=drift_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Requests drift_report for each newly validated batch, once a champion exists.",
)
def validated_batch_sensor(
    context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource
) -> dg.SensorResult:
    # The published pointer, not MLflow: a tick must stay cheap.
    champ = read_champion(artifacts.store)
    requests, cursor, skipped = [], context.cursor, []
    for storage_id, mat in _new_materializations(context, "validated_batch"):
        cursor = str(storage_id)
        if mat.partition is None:
            continue
        if champ is None:
            skipped.append(mat.partition)
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"drift:{mat.partition}:{storage_id}",
                partition_key=mat.partition,
                tags={
                    "cv_assets/trigger": "validated_batch",
                    "cv_assets/champion": champ["version"],
                },
            )
        )
    if skipped:
        context.log.info(f"no champion yet, no drift to measure for {', '.join(skipped)}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.sensor(
    job=training_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Requests retraining when a batch's drift report is flagged: one run per drift "
    "event (batch x champion), and none within the cooldown after the last training run.",
)
def drift_sensor(
    context: dg.SensorEvaluationContext, settings: PlatformSettings
) -> dg.SensorResult:
    requests, cursor, notes = [], context.cursor, []
    since = datetime.fromtimestamp(time.time() - settings.retrain_cooldown_s, UTC)
    for storage_id, mat in _new_materializations(context, "drift_report"):
        cursor = str(storage_id)
        meta = {k: v.value for k, v in mat.metadata.items()}
        if mat.partition is None or not meta.get("drifted"):
            continue
        recent = context.instance.get_runs(
            dg.RunsFilter(job_name=training_job.name, created_after=since), limit=1
        )
        if recent or requests:
            notes.append(
                f"{mat.partition} drifted within the {settings.retrain_cooldown_s} s cooldown "
                "of the last training, whose dataset includes it"
            )
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"drift:{mat.partition}:v{meta.get('champion_version')}",
                tags={
                    "cv_assets/trigger": "drift",
                    "cv_assets/drift_batch": mat.partition,
                    "cv_assets/drift_columns": str(meta.get("drifted_columns", "")),
                },
            )
        )
    for n in notes:
        context.log.info(n)
    skip = "; ".join(notes) if notes and not requests else None
    return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skip)
