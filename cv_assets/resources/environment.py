"""The single place where the embedded default and a deployment diverge.

``PlatformConfig.from_env`` decides local vs ``s3://``/Postgres from the environment; this module
turns that decision into Dagster resources. Nothing else reads these environment variables.
"""

import json
from typing import Any

from cv_assets.lib.settings import PlatformConfig
from cv_assets.resources.io_manager import JsonRecordIOManager
from cv_assets.resources.storage import (
    ArtifactStoreResource,
    LandingZoneResource,
    MlflowResource,
    PlatformSettings,
)


def platform_resources(cfg: PlatformConfig | None = None) -> dict[str, Any]:
    cfg = cfg or PlatformConfig.from_env()
    artifacts = ArtifactStoreResource(root=cfg.artifacts_root, s3_endpoint_url=cfg.s3_endpoint_url)
    return {
        "artifacts": artifacts,
        "landing": LandingZoneResource(root=cfg.landing_root, s3_endpoint_url=cfg.s3_endpoint_url),
        "settings": PlatformSettings(
            classes=list(cfg.classes),
            home=str(cfg.home),
            retrain_cooldown_s=cfg.retrain_cooldown_s,
            event_train_json=json.dumps(dict(cfg.event_train)) if cfg.event_train else "",
        ),
        "io_manager": JsonRecordIOManager(artifacts=artifacts),
        "mlflow": MlflowResource(
            tracking_uri=cfg.mlflow_tracking_uri,
            artifact_root=cfg.mlflow_artifact_root,
            ui_url=cfg.mlflow_ui_url,
            require_approval=cfg.require_approval,
        ),
    }
