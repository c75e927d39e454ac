"""Field drift: each day of the apps' own traffic, per cohort, against the champion.

``field_drift[day]`` reads what the telemetry service stored for the day and compares each cohort
(model version x device class x app version) with the champion's view of its frozen test split,
with the batch drift report's calibrated test. ``field_samples[day]`` sends the day's
sampled frames on: low-confidence ones land as an unlabelled batch (the annotation round's pool),
random ones join the audit set. ``field_day_sensor`` runs both for each closed day with events,
and again when late events arrive; a flagged day retrains through ``field_drift_sensor``
(``defs/automation``), with the batch drift path's cooldown and run keys.
"""

import hashlib
from datetime import UTC, datetime, time, timedelta

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.defs.monitoring.config import DriftConfig
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.audit import record_audit
from cv_assets.lib.telemetry.field_report import EVENTS, day_events, field_report
from cv_assets.lib.telemetry.samples import land_low_confidence
from cv_assets.lib.tracking.registry import read_champion
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import (
    ArtifactStoreResource,
    LandingZoneResource,
    PlatformSettings,
)

field_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)


class FieldDriftConfig(DriftConfig):
    min_events: int = Field(
        default=200, description="a cohort with fewer events that day is not judged"
    )


@dg.asset(
    partitions_def=field_days,
    group_name="monitoring",
    kinds={"evidently", "parquet"},
    owners=OWNERS,
    code_version="1",
)
def field_drift(
    context: dg.AssetExecutionContext,
    config: FieldDriftConfig,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """One day of app telemetry per cohort (model x device class x app) vs the champion."""
    champ = champion_with_onnx(champion_model, "field drift is measured against the champion")
    rep = field_report(
        artifacts.store,
        day=context.partition_key,
        champion_version=champ.version,
        champion_key=champ.weights_sha256[:16],
        dataset_version=champ.dataset_version,
        detector_uri=str(champ.mobile["onnx_uri"]),
        min_events=config.min_events,
        settings=config.settings(),
    )
    for c in rep.cohorts:
        (context.log.warning if c.drifted else context.log.info)(c.reason)
    rows = [(c.cohort, c.n_events, "skipped" if c.skipped else ("DRIFTED" if c.drifted else "ok"),
             ", ".join(sorted(c.columns)) or "-") for c in rep.cohorts]  # fmt: skip
    rec = rep.as_dict()
    return dg.MaterializeResult(
        value=rec,
        metadata={
            "n_events": rep.n_events,
            "drifted": bool(rep.flagged),
            "drifted_cohorts": rec["drifted_cohorts"],
            "champion_version": champ.version,
            "cohorts": dg.MetadataValue.md(
                md_table(rows, ["cohort", "events", "verdict", "drifted columns"])
                if rows
                else "no field events this day"
            ),
            "report": dg.MetadataValue.path(rep.report.uri if rep.report else "-"),
        },
    )


@dg.asset(
    partitions_def=field_days,
    group_name="monitoring",
    kinds={"parquet"},
    owners=OWNERS,
    code_version="1",
)
def field_samples(
    context: dg.AssetExecutionContext,
    artifacts: ArtifactStoreResource,
    landing: LandingZoneResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult:
    """A day's sampled app frames: low-confidence ones land for labelling, random ones audit."""
    store, day = artifacts.store, context.partition_key
    events = day_events(store, day)
    zone = ArtifactStore(landing.root, s3_endpoint_url=landing.s3_endpoint_url)
    landed = land_low_confidence(store, zone, day, events, list(settings.classes),
                                 datetime.now(UTC))  # fmt: skip
    audit = record_audit(store, day, events)
    why = "no frame: the users did not consent" if landed.sampled and not landed.with_frame else ""
    context.log.info(
        f"{day}: {landed.sampled} low-confidence events, {landed.with_frame} with a frame; "
        + (f"landed {landed.landed} as batch {landed.batch_id}" if landed.batch_id
           else f"nothing new to land {why}".strip())
        + f"; {audit} random frames in the audit set"
    )  # fmt: skip
    sampling = events["sampling"].value_counts().to_dict() if not events.empty else {}
    rows = [(k, int(sampling.get(k, 0))) for k in ("low_confidence", "random", "none")]
    return dg.MaterializeResult(
        value=landed.as_dict() | {"audit_frames": audit},
        metadata={
            "n_events": len(events),
            "sampling": dg.MetadataValue.md(md_table(rows, ["sampling", "events"])),
            "low_confidence_frames": landed.with_frame,
            "landed_frames": landed.landed,
            "landed_before": landed.landed_before,
            "field_batch": landed.batch_id or "-",
            "audit_frames": audit,
        },
    )


field_monitoring_job = dg.define_asset_job(
    "field_monitoring_job",
    selection=[field_drift, field_samples],
    description="One day of the apps' telemetry: per cohort against the champion, and its "
    "sampled frames sent to labelling and to the audit set.",
)


FIELD_WINDOW_DAYS = 7  # closed days the sensor looks back over for new or late events


def field_day_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    """Judges each closed day of field traffic, and again when late events arrive."""

    @dg.sensor(
        name="field_day_sensor",
        job=field_monitoring_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=max(cfg.sensor_interval_s, 30),
        description="Field telemetry: runs field_drift and field_samples for each day of the last "
        f"{FIELD_WINDOW_DAYS} once it has been over {cfg.field_settle_s} s, and again when the "
        "day gains events later (apps send what they queued offline).",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, artifacts: ArtifactStoreResource
    ) -> dg.SensorResult:
        if read_champion(artifacts.store) is None:
            return dg.SensorResult(
                skip_reason="no champion yet: field drift is measured against it"
            )
        now = datetime.now(UTC)
        requests = []
        for back in range(1, FIELD_WINDOW_DAYS + 1):
            day = (now - timedelta(days=back)).date()
            closed_for = (
                now - datetime.combine(day + timedelta(days=1), time(), UTC)
            ).total_seconds()
            parts = sorted(artifacts.store.list(f"{EVENTS}day={day.isoformat()}/"))
            if not parts or closed_for < cfg.field_settle_s:
                continue
            # The run key names the day's parts: the same parts never run twice, a late part does.
            digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
            requests.append(
                dg.RunRequest(run_key=f"field:{day}:{digest}", partition_key=day.isoformat())
            )
        skip = None if requests else "no closed day with stored field events"
        return dg.SensorResult(run_requests=requests, skip_reason=skip)

    return _sensor
