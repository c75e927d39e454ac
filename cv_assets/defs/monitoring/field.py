"""Field drift: each day of the apps' own traffic, per cohort, against the champion.

``field_drift[day]`` reads what the telemetry service stored for the day and compares each cohort
(model version x device class x app version) with the champion's view of its frozen test split,
with the batch drift report's calibrated test. ``field_drift_schedule`` asks for yesterday's
partition shortly after midnight UTC when the day had traffic; a flagged day retrains through
``field_drift_sensor`` (``defs/automation``), with the batch drift path's cooldown and run keys.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.defs.monitoring.config import DriftConfig
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.telemetry.field_report import EVENTS, field_report
from cv_assets.lib.tracking.registry import read_champion
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import ArtifactStoreResource

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


field_monitoring_job = dg.define_asset_job(
    "field_monitoring_job",
    selection=[field_drift],
    partitions_def=field_days,
    description="One day of the apps' telemetry, per cohort, against the champion.",
)


def field_drift_schedule(cfg: PlatformConfig) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="field_drift_schedule",
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        job=field_monitoring_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Yesterday's field drift, once the day is over, when apps sent events and a "
        "champion exists.",
    )
    def _schedule(
        context: dg.ScheduleEvaluationContext, artifacts: ArtifactStoreResource
    ) -> dg.RunRequest | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
        if read_champion(artifacts.store) is None:
            return dg.SkipReason("no champion yet: field drift is measured against it")
        if not artifacts.store.list(f"{EVENTS}day={day}/"):
            return dg.SkipReason(f"no field events stored for {day}")
        return dg.RunRequest(run_key=f"field:{day}", partition_key=day)

    return _schedule
