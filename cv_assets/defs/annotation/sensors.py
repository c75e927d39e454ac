"""``labelstudio_sensor``: lands what people labelled in Label Studio as ``labelstudio`` batches."""

from datetime import UTC, datetime

import dagster as dg

from cv_assets.lib.annotation.collect import collect_round, manifests
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.resources.labelstudio import LabelStudioResource
from cv_assets.resources.storage import (
    ArtifactStoreResource,
    LandingZoneResource,
    PlatformSettings,
)

ROUND_ASSET = dg.AssetKey("annotation_round")


def labelstudio_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    """The sensor; it does nothing (and needs no Label Studio) until a round exists."""
    return dg.sensor(
        name="labelstudio_sensor",
        minimum_interval_seconds=max(cfg.sensor_interval_s, 30),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Collects completed Label Studio tasks of every open annotation round and "
        "lands them as a labelstudio batch (landing_sensor takes it in); records each round's "
        "counts as an observation of annotation_round. Skipped tasks land nothing.",
    )(collect_tick)


def collect_tick(
    context: dg.SensorEvaluationContext,
    artifacts: ArtifactStoreResource,
    landing: LandingZoneResource,
    labelstudio: LabelStudioResource,
    settings: PlatformSettings,
) -> dg.SensorResult | dg.SkipReason:
    store = artifacts.store
    rounds = [m for m in manifests(store) if not m.get("closed")]
    if not rounds:
        return dg.SkipReason("no open annotation round")
    # Writes go to the landing zone exactly as a producer's would (landing_sensor reads it).
    zone = ArtifactStore(landing.root, s3_endpoint_url=landing.s3_endpoint_url)
    client, now = labelstudio.client(), datetime.now(UTC)
    events = []
    for m in rounds:
        out = collect_round(client, store, zone, m, settings.classes, now)
        if out.batch_id:
            context.log.info(f"{out.round_id}: {out.landed_now} task(s) landed as {out.batch_id}")
        meta: dict[str, dg.MetadataValue] = {
            k: dg.MetadataValue.int(v) for k, v in out.counts.items()
        }
        meta |= {"round_id": dg.MetadataValue.text(out.round_id)}
        if out.project_deleted:
            meta["project_deleted"] = dg.MetadataValue.bool(True)
        events.append(dg.AssetObservation(asset_key=ROUND_ASSET, metadata=meta))
    # No cursor: what was landed is in each round's collected.json, beside the round.
    return dg.SensorResult(asset_events=events)
