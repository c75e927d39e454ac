"""The retraining triggers that are events, not state: drift and degraded live accuracy.

Both read new materializations from the instance's event log after a storage-id cursor, every one
of them (an asset sensor would see only the newest per tick, and batches arrive in bursts). The
run key names the event (batch x champion), so a daemon restart cannot train twice for it, and
the cooldown keeps a burst of flagged batches to one retraining: its dataset holds them all.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from cv_assets.defs.automation.state import last_training_start
from cv_assets.defs.training.jobs import TRAINING_ASSETS, training_tags
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.resources.storage import PlatformSettings

PAGE = 200


def new_materializations(
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


def retrain_on_flag(
    context: dg.SensorEvaluationContext,
    settings: PlatformSettings,
    asset: str,
    flag: str,
    trigger: str,
    why: dict[str, str],
    futile: Callable[[dg.DagsterInstance, str], str | None] | None = None,
) -> dg.SensorResult:
    """A training_job request for the first flagged materialization outside the cooldown.

    ``futile(instance, partition)``: why retraining cannot answer this flag, or None.
    """
    requests, cursor, notes = [], context.cursor, []
    for storage_id, mat in new_materializations(context, asset):
        cursor = str(storage_id)
        meta: dict[str, Any] = {k: v.value for k, v in mat.metadata.items()}
        if mat.partition is None or not meta.get(flag):
            continue
        if futile is not None and (reason := futile(context.instance, mat.partition)):
            notes.append(f"{mat.partition}: {trigger}, but {reason}")
            continue
        started = last_training_start(context.instance, settings.retrain_cooldown_s)
        if started is not None or requests:
            notes.append(
                f"{mat.partition}: {trigger} within the {settings.retrain_cooldown_s} s cooldown "
                "of the last training: no second retraining"
            )
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"{trigger}:{mat.partition}:v{meta.get('champion_version')}",
                run_config=settings.event_run_config(),
                tags={
                    "cv_assets/trigger": trigger,
                    "cv_assets/trigger_batch": mat.partition,
                    **{tag: str(meta.get(key, "")) for tag, key in why.items()},
                },
            )
        )
    for n in notes:
        context.log.info(n)
    skip = "; ".join(notes) if notes and not requests else None
    return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skip)


def drift_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    return dg.sensor(
        name="drift_sensor",
        job_name="training_job",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        description="Drift: requests retraining when a batch's drift report is flagged; one run "
        "per drift event (batch x champion), none within the cooldown after the last training.",
    )(drift_tick)


def nothing_labelled(instance: dg.DagsterInstance, batch_id: str) -> str | None:
    """Why a drifted batch without a labelled image cannot be learnt from (None if it can).

    Its images are in the unlabelled pool: a retraining now would see the same dataset. Field
    frames sampled for low confidence are such a batch, and drift by their very selection; the
    field's own drift is judged by field_drift, against cohorts, not against a biased sample.
    """
    from cv_assets.read_side import latest_metadata

    meta = latest_metadata(instance, "validated_batch", batch_id) or {}
    if int(meta.get("accepted", 1) or 0) == 0:
        return "it holds no labelled image: nothing to retrain on until its frames are labelled"
    return None


def drift_tick(context: dg.SensorEvaluationContext, settings: PlatformSettings) -> dg.SensorResult:
    return retrain_on_flag(
        context,
        settings,
        "drift_report",
        "drifted",
        "drift",
        {"cv_assets/drift_columns": "drifted_columns", "cv_assets/drift_share": "drift_share"},
        futile=nothing_labelled,
    )


def field_drift_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    return dg.sensor(
        name="field_drift_sensor",
        job_name="training_job",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        description="Field drift: requests retraining when a cohort of a day's app telemetry "
        "drifted; one run per day x champion, none within the cooldown after the last training.",
    )(field_drift_tick)


def field_drift_tick(
    context: dg.SensorEvaluationContext, settings: PlatformSettings
) -> dg.SensorResult:
    return retrain_on_flag(
        context,
        settings,
        "field_drift",
        "drifted",
        "field_drift",
        {"cv_assets/drift_cohorts": "drifted_cohorts"},
    )


def degradation_sensor(cfg: PlatformConfig) -> dg.SensorDefinition:
    return dg.sensor(
        name="degradation_sensor",
        job_name="training_job",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        description="Degradation: requests retraining when the champion's mAP50 on a newly "
        "landed batch falls more than the margin below its test mAP50; one run per batch x "
        "champion.",
    )(degradation_tick)


def degradation_tick(
    context: dg.SensorEvaluationContext, settings: PlatformSettings
) -> dg.SensorResult:
    return retrain_on_flag(
        context,
        settings,
        "champion_performance",
        "degraded",
        "degradation",
        {"cv_assets/batch_map50": "map50", "cv_assets/test_map50": "champion_test_map50"},
    )


def retrain_automation(cfg: PlatformConfig) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "retrain_automation",
        target=TRAINING_ASSETS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=cfg.sensor_interval_s,
        # The volume, freshness and cooldown conditions read the instance: Python on the code
        # server.
        use_user_code_server=True,
        run_tags=training_tags(cfg) | {"cv_assets/trigger": "automation"},
        description="Volume and freshness: re-snapshots the dataset when enough new data has "
        "landed or the model is stale, then everything downstream runs eagerly in the same run.",
    )
