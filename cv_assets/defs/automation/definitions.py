"""The automation group (the retraining triggers), as one ``Definitions`` object for a config."""

import dagster as dg

from cv_assets.defs.automation.conditions import model_freshness, training_dataset_condition
from cv_assets.defs.automation.schedules import retrain_schedule
from cv_assets.defs.automation.sensors import (
    degradation_sensor,
    drift_sensor,
    field_drift_sensor,
    retrain_automation,
)
from cv_assets.lib.core.settings import PlatformConfig


def build(cfg: PlatformConfig) -> dg.Definitions:
    return dg.Definitions(
        sensors=[
            retrain_automation(cfg),
            drift_sensor(cfg),
            field_drift_sensor(cfg),
            degradation_sensor(cfg),
        ],
        schedules=[retrain_schedule(cfg)],
    )


def with_retraining_policy(defs: dg.Definitions, cfg: PlatformConfig) -> dg.Definitions:
    """The volume/freshness condition on the dataset and the freshness policy on the model, from
    the platform's settings (N, cooldown, maximum model age)."""
    conditions = {
        "training_dataset": {"automation_condition": training_dataset_condition(cfg)},
        "yolo_model": {"freshness_policy": model_freshness(cfg)},
    }

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return spec.replace_attributes(**conditions[spec.key.to_user_string()])

    return defs.map_resolved_asset_specs(func=apply, selection=list(conditions))
