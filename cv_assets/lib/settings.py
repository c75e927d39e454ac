"""Where the platform keeps things, read from the environment in one place.

This is the single switch between the embedded default (local folders, SQLite) and a deployment
(``s3://`` landing zone and artifact store, an MLflow server on Postgres). Everything else, the
Dagster resources and the CLI alike, asks ``PlatformConfig.from_env()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLASSES = ("square", "circle", "triangle")
PROFILES = ("local", "cloud")


@dataclass(frozen=True)
class PlatformConfig:
    profile: str
    home: Path
    landing_root: str
    artifacts_root: str
    mlflow_tracking_uri: str
    s3_endpoint_url: str | None
    classes: tuple[str, ...]
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    mlflow_artifact_root: str | None = None
    require_approval: bool = False
    retrain_cooldown_s: int = 1800

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlatformConfig:
        """``CV_ASSETS_PROFILE=local`` (default) or ``cloud``.

        local: everything under ``CV_ASSETS_HOME`` (default ``./.cv_assets``).
        cloud: ``CV_ASSETS_S3_ROOT=s3://bucket/prefix`` holds ``landing/`` and ``artifacts/``,
        ``MLFLOW_TRACKING_URI`` must name the tracking server. Individual roots can still be
        overridden with ``CV_ASSETS_LANDING`` / ``CV_ASSETS_ARTIFACTS``.
        """
        e = os.environ if env is None else env
        profile = e.get("CV_ASSETS_PROFILE", "local")
        if profile not in PROFILES:
            raise ValueError(
                f"CV_ASSETS_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}"
            )
        home = Path(e.get("CV_ASSETS_HOME", ".cv_assets")).expanduser().absolute()
        if profile == "cloud":
            root = e.get("CV_ASSETS_S3_ROOT", "")
            if not root.startswith("s3://"):
                raise ValueError(
                    "CV_ASSETS_PROFILE=cloud needs CV_ASSETS_S3_ROOT=s3://bucket/prefix"
                )
            if not e.get("MLFLOW_TRACKING_URI"):
                raise ValueError("CV_ASSETS_PROFILE=cloud needs MLFLOW_TRACKING_URI")
            landing, artifacts = f"{root.rstrip('/')}/landing", f"{root.rstrip('/')}/artifacts"
        else:
            root = ""
            landing, artifacts = str(home / "landing"), str(home / "artifacts")
        classes = tuple(
            c.strip() for c in e.get("CV_ASSETS_CLASSES", ",".join(DEFAULT_CLASSES)).split(",")
        )
        return cls(
            profile=profile,
            home=home,
            landing_root=e.get("CV_ASSETS_LANDING", landing),
            artifacts_root=e.get("CV_ASSETS_ARTIFACTS", artifacts),
            mlflow_tracking_uri=e.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            s3_endpoint_url=e.get("CV_ASSETS_S3_ENDPOINT_URL") or None,
            classes=tuple(c for c in classes if c),
            mlflow_ui_url=e.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            mlflow_artifact_root=e.get(
                "MLFLOW_ARTIFACT_ROOT",
                f"{root.rstrip('/')}/mlflow" if profile == "cloud" else str(home / "mlruns"),
            ),
            require_approval=e.get("CV_ASSETS_REQUIRE_APPROVAL", "0").lower() in ("1", "true"),
            retrain_cooldown_s=int(e.get("CV_ASSETS_RETRAIN_COOLDOWN_S", "1800")),
        )
