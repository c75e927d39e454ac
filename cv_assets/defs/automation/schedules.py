"""An optional cron retraining, off unless ``CV_ASSETS_RETRAIN_SCHEDULE=1``.

For teams that want a retraining window (say nightly) on top of the triggers: it retrains only
when new accepted data exists, so an idle night costs nothing.
"""

import dagster as dg

from cv_assets.defs.automation.state import last_training_start, new_accepted_data
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.resources.storage import PlatformSettings


def retrain_schedule(cfg: PlatformConfig) -> dg.ScheduleDefinition:
    return dg.schedule(
        name="retrain_schedule",
        job_name="training_job",
        cron_schedule=cfg.retrain_cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if cfg.retrain_schedule_on
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Cron retraining (CV_ASSETS_RETRAIN_CRON), only when new accepted data exists.",
    )(retrain_tick)


def retrain_tick(context: dg.ScheduleEvaluationContext, settings: PlatformSettings):
    new = new_accepted_data(context.instance)
    if not new.images:
        return dg.SkipReason(f"no retraining: {new.describe()}")
    if last_training_start(context.instance, settings.retrain_cooldown_s) is not None:
        return dg.SkipReason(
            f"no retraining: a training started within the {settings.retrain_cooldown_s} s "
            f"cooldown ({new.describe()})"
        )
    return dg.RunRequest(
        run_key=f"schedule:{context.scheduled_execution_time.isoformat()}",
        run_config=settings.event_run_config(),
        tags={"cv_assets/trigger": "schedule", "cv_assets/new_images": str(new.images)},
    )
