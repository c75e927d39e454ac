"""The single place where the embedded default and a deployment diverge.

``PlatformConfig.from_env`` decides local vs ``s3://``/Postgres from the environment; this module
turns that decision into Dagster resources. Nothing else reads these environment variables.

A value that can carry a credential (an MLflow tracking URI such as
``postgresql://user:password@host/db`` or ``https://user:token@host``, an S3 endpoint URL) reaches
its resource as ``dg.EnvVar(NAME)`` whenever it came from the environment: Dagster resolves it when
the resource is initialised in a run or a tick, and the UI's Resources page shows only the
variable's name. The embedded default (a SQLite path under ``CV_ASSETS_HOME``, no endpoint) holds
no secret and stays a literal.
"""

import json
import os
from typing import Any, overload
from urllib.parse import urlparse

import dagster as dg

from cv_assets.lib.annotation.labelstudio import TOKEN_VAR as LABELSTUDIO_TOKEN_VAR
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.mobile.releases import KEY_VAR as RELEASE_KEY_VAR
from cv_assets.resources.io_manager import JsonRecordIOManager
from cv_assets.resources.labelstudio import LabelStudioResource
from cv_assets.resources.release import ReleaseSigningResource
from cv_assets.resources.storage import (
    ArtifactStoreResource,
    LandingZoneResource,
    MlflowResource,
    PlatformSettings,
)
from cv_assets.resources.training import (
    EcsTrainingLauncher,
    K8sTrainingLauncher,
    SubprocessTrainingLauncher,
    TrainingLauncher,
    check_pod_spec,
)

# Where ``PlatformConfig.from_env`` reads the values that may hold a credential.
TRACKING_URI_VAR = "MLFLOW_TRACKING_URI"
S3_ENDPOINT_VAR = "CV_ASSETS_S3_ENDPOINT_URL"


@overload
def secret_from_env(var: str, value: str) -> str: ...
@overload
def secret_from_env(var: str, value: None) -> None: ...
def secret_from_env(var: str, value: str | None) -> str | None:
    """``dg.EnvVar(var)`` when ``value`` is what the environment holds under ``var`` (so it
    resolves to the same value at run time), else ``value`` itself: a default, or a value a
    caller set in code (a test's config), which the environment could not reproduce."""
    if value is not None and os.environ.get(var) == value:
        return dg.EnvVar(var)
    return value


def platform_resources(cfg: PlatformConfig) -> dict[str, Any]:
    endpoint = secret_from_env(S3_ENDPOINT_VAR, cfg.s3_endpoint_url)
    artifacts = ArtifactStoreResource(root=cfg.artifacts_root, s3_endpoint_url=endpoint)
    return {
        "artifacts": artifacts,
        "landing": LandingZoneResource(root=cfg.landing_root, s3_endpoint_url=endpoint),
        "settings": PlatformSettings(
            classes=list(cfg.classes),
            home=str(cfg.home),
            retrain_cooldown_s=cfg.retrain_cooldown_s,
            event_train_json=json.dumps(dict(cfg.event_train)) if cfg.event_train else "",
            class_aliases=dict(cfg.class_aliases),
            export_python=cfg.export_python,
            phone_files=cfg.phone_files,
        ),
        "io_manager": JsonRecordIOManager(artifacts=artifacts),
        "mlflow": MlflowResource(
            tracking_uri=secret_from_env(TRACKING_URI_VAR, cfg.mlflow_tracking_uri),
            artifact_root=cfg.mlflow_artifact_root,
            ui_url=cfg.mlflow_ui_url,
            require_approval=cfg.require_approval,
        ),
        "release": ReleaseSigningResource(
            key_file=cfg.release_key_file,
            key_pem=secret_from_env(RELEASE_KEY_VAR, cfg.release_key),
            stable=cfg.release_stable,
        ),
        # yolo_model's training process (defs/training/pipes.py): a subprocess, a Kubernetes pod
        # or an ECS task, by CV_ASSETS_TRAINING_LAUNCHER.
        "pipes": training_launcher(cfg),
        "labelstudio": LabelStudioResource(
            url=cfg.labelstudio_url,
            token=secret_from_env(LABELSTUDIO_TOKEN_VAR, cfg.labelstudio_token),
            files_root=cfg.labelstudio_files,
        ),
    }


def training_launcher(cfg: PlatformConfig) -> TrainingLauncher:
    """Where ``yolo_model``'s training process runs (``resources/training.py``).

    A pod or a task has no share of this machine's disk: with either, the artifact store and
    MLflow must be services, or the definitions do not load.
    """
    if cfg.training_launcher == "subprocess":
        return SubprocessTrainingLauncher()
    _services_only(cfg)
    if cfg.training_launcher == "k8s":
        spec = dict(cfg.training_pod_spec)
        check_pod_spec(spec, cfg.training_image)
        return K8sTrainingLauncher(
            pod_spec=spec, image=cfg.training_image, namespace=cfg.training_namespace
        )
    return EcsTrainingLauncher(run_task=dict(cfg.training_run_task))


def _services_only(cfg: PlatformConfig) -> None:
    where = (
        f"CV_ASSETS_TRAINING_LAUNCHER={cfg.training_launcher} trains in a "
        f"{'pod' if cfg.training_launcher == 'k8s' else 'task'} of its own, which has no share "
        "of this machine's disk"
    )
    if not cfg.artifacts_root.startswith("s3://"):
        raise ValueError(
            f"{where}: the artifact store must be s3:// (CV_ASSETS_PROFILE=cloud with "
            f"CV_ASSETS_S3_ROOT, or CV_ASSETS_ARTIFACTS), not {cfg.artifacts_root}"
        )
    # Only the scheme is named: a tracking URI may hold a password.
    scheme = urlparse(cfg.mlflow_tracking_uri).scheme
    if scheme in ("", "file", "sqlite"):
        raise ValueError(
            f"{where}: {TRACKING_URI_VAR} must name a tracking server (http://, https:// or a "
            f"database), not a local {scheme or 'path'}"
        )
    root = cfg.mlflow_artifact_root
    if root and urlparse(root).scheme in ("", "file"):
        raise ValueError(
            f"{where}: MLFLOW_ARTIFACT_ROOT must be a bucket (s3://), not the local {root}"
        )
