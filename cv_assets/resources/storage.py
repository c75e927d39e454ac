"""Resources over the artifact store and the landing zone (local paths or ``s3://``)."""

import json
from functools import lru_cache
from typing import Any

import dagster as dg
from pydantic import Field

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import Registry
from cv_assets.lib.tracking.runs import MODEL_NAME


@lru_cache(maxsize=8)
def _store(root: str, endpoint: str | None) -> ArtifactStore:
    return ArtifactStore(root, s3_endpoint_url=endpoint)


@lru_cache(maxsize=8)
def _zone(root: str, endpoint: str | None) -> LandingZone:
    return LandingZone(root, s3_endpoint_url=endpoint)


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where weights, datasets, tables and reports are written, atomically and with a sha256."""

    root: str
    s3_endpoint_url: str | None = None

    @property
    def store(self) -> ArtifactStore:
        return _store(self.root, self.s3_endpoint_url)


class LandingZoneResource(dg.ConfigurableResource):
    """The landing zone that producers write batches into (read-only for the platform)."""

    root: str
    s3_endpoint_url: str | None = None

    @property
    def zone(self) -> LandingZone:
        return _zone(self.root, self.s3_endpoint_url)


class PlatformSettings(dg.ConfigurableResource):
    """Platform-wide facts that every asset must agree on."""

    classes: list[str]
    home: str
    retrain_cooldown_s: int = 1800  # at least this long between automatic retrainings
    event_train_json: str = ""  # training settings a drift/degradation/schedule run adds
    # Other category names of imported annotations -> the platform's class names.
    class_aliases: dict[str, str] = Field(default_factory=dict)
    # The export environment's python (LiteRT, Core ML); "" is the checkout's .venv-export.
    export_python: str = ""
    phone_files: bool = True  # CV_ASSETS_PHONE_FILES: make the LiteRT and Core ML files

    def event_run_config(self) -> dict[str, Any]:
        extra = json.loads(self.event_train_json) if self.event_train_json else {}
        return {"ops": {"yolo_model": {"config": extra}}} if extra else {}


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking and the model registry (SQLite by default, a server when deployed)."""

    tracking_uri: str
    artifact_root: str | None = None
    ui_url: str = "http://127.0.0.1:5000"
    model_name: str = MODEL_NAME
    require_approval: bool = False

    def client(self) -> Any:
        """A client whose experiment exists, with artifacts under ``artifact_root``."""
        c = tracking.client(self.tracking_uri)
        tracking.experiment_id(c, artifact_location=self.artifact_root)
        return c

    def registry(self, store: ArtifactStore) -> Registry:
        return Registry(self.client(), self.model_name, store)
