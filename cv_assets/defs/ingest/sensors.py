"""``landing_sensor``: turns each complete landed batch into a partition and an intake run."""

import json
from datetime import UTC, datetime

import dagster as dg

from cv_assets.defs.ingest.config import IntakeConfig
from cv_assets.defs.ingest.jobs import intake_job
from cv_assets.defs.ingest.partitions import BATCHES, batches
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.ingest.landing import brief_list, clip
from cv_assets.lib.ingest.raw import load_raw_manifest
from cv_assets.lib.ingest.tick import LandingCursor, plan_landing_tick
from cv_assets.resources.storage import ArtifactStoreResource, LandingZoneResource, PlatformSettings

# A refusal record, log line and `cv-assets status` entry never grow with what a producer sent.
MAX_REASON_CHARS = 2000


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


def landing_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    """The sensor, ticking at the platform's interval (``CV_ASSETS_SENSOR_INTERVAL``)."""
    return dg.sensor(
        name="landing_sensor",
        job=intake_job,
        minimum_interval_seconds=cfg.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition and requests intake for each complete landed batch "
        "(batch.json present); run_key = batch id + manifest hash, so it is idempotent. Refuses, "
        "with a reason in artifacts/refusals/<batch>.json, batches that break the landing contract "
        "and ingested batches whose files changed since.",
    )(landing_tick)


def landing_tick(
    context: dg.SensorEvaluationContext,
    landing: LandingZoneResource,
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.SensorResult:
    store = artifacts.store
    known = set(context.instance.get_dynamic_partitions(BATCHES))
    plan = plan_landing_tick(
        landing.zone,
        settings.classes,
        LandingCursor.loads(context.cursor),
        known,
        _recorded_manifest(context.instance),
        recorded_files=lambda bid: load_raw_manifest(store, bid),
        max_classes=IntakeConfig().max_classes,  # sensors take no run config: the default
    )
    for bid, stamp, why in plan.refusals:
        reason = clip(why, MAX_REASON_CHARS)
        context.log.warning(f"refused batch {bid}: {reason}")
        body = {
            "batch_id": bid,
            "stamp": stamp,
            "reason": reason,
            "at": datetime.now(UTC).isoformat(),
        }
        store.put_bytes(f"refusals/{bid}.json", json.dumps(body).encode())
    # A batch that is accepted again (fixed, or changed back to what was ingested) is no longer
    # refused.
    for bid in [b for b, _sha in plan.requests] + plan.unchanged:
        if store.exists(f"refusals/{bid}.json"):
            store.delete(f"refusals/{bid}.json")
    if plan.ignored:
        context.log.info(f"not batch ids, ignored: {brief_list(sorted(plan.ignored))}")
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
