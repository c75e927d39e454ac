"""``landing_sensor``: turns each complete landed batch into a partition and an intake run."""

import json
from datetime import UTC, datetime

import dagster as dg

from cv_assets.defs.ingest.jobs import intake_job
from cv_assets.defs.ingest.partitions import BATCHES, batches
from cv_assets.lib.landing import LandingCursor, plan_landing_tick
from cv_assets.lib.settings import PlatformConfig
from cv_assets.resources.storage import ArtifactStoreResource, LandingZoneResource, PlatformSettings

INTERVAL_S = PlatformConfig.from_env().sensor_interval_s


def _recorded_manifest(instance: dg.DagsterInstance):
    def lookup(batch_id: str) -> str | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_batch"), asset_partitions=[batch_id]),
            limit=1,
        ).records
        ev = records[0].event_log_entry if records else None
        mat = ev.asset_materialization if ev else None
        val = mat.metadata.get("manifest_sha256") if mat else None
        return str(val.value) if val is not None else None

    return lookup


@dg.sensor(
    job=intake_job,
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition and requests intake for each complete landed batch "
    "(batch.json present); run_key = batch id + manifest hash, so it is idempotent.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext,
    landing: LandingZoneResource,
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.SensorResult:
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    plan = plan_landing_tick(
        landing.zone,
        settings.classes,
        LandingCursor.loads(context.cursor),
        known,
        _recorded_manifest(context.instance),
    )
    for bid, stamp, why in plan.refusals:
        context.log.warning(f"refused batch {bid}: {why}")
        body = {"batch_id": bid, "stamp": stamp, "reason": why, "at": datetime.now(UTC).isoformat()}
        artifacts.store.put_bytes(f"refusals/{bid}.json", json.dumps(body).encode())
    for bid, _sha in plan.requests:
        if artifacts.store.exists(f"refusals/{bid}.json"):
            artifacts.store.delete(f"refusals/{bid}.json")
    if plan.ignored:
        context.log.info(f"not batch ids, ignored: {', '.join(sorted(plan.ignored)[:20])}")
    if plan.deferred:
        context.log.info(f"{len(plan.deferred)} batches deferred to the next tick")
    new = sorted({bid for bid, _ in plan.requests} - known)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{bid}:{sha[:16]}",
                partition_key=bid,
                tags={"cv_assets/manifest_sha256": sha, "cv_assets/trigger": "landing"},
            )
            for bid, sha in plan.requests
        ],
        dynamic_partitions_requests=[batches.build_add_request(new)] if new else [],
        cursor=plan.cursor.dumps(),
    )
