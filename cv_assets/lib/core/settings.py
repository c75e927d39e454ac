"""Where the platform keeps things, read from the environment in one place.

This is the single switch between the embedded default (local folders, SQLite) and a deployment
(``s3://`` landing zone and artifact store, an MLflow server on Postgres). Everything else, the
Dagster resources and the CLI alike, is handed the ``PlatformConfig`` that its process entry point
built once with ``PlatformConfig.from_env()``: nothing reads the environment at import time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CLASSES = ("square", "circle", "triangle")
PROFILES = ("local", "cloud")
# Where yolo_model's training process runs (resources/training.py): beside the run, in a
# Kubernetes pod, in an ECS task.
TRAINING_LAUNCHERS = ("subprocess", "k8s", "ecs")
LAUNCHER_VAR = "CV_ASSETS_TRAINING_LAUNCHER"
POD_SPEC_VAR = "CV_ASSETS_TRAINING_POD_SPEC"
IMAGE_VAR = "CV_ASSETS_TRAINING_IMAGE"
NAMESPACE_VAR = "CV_ASSETS_TRAINING_NAMESPACE"
RUN_TASK_VAR = "CV_ASSETS_TRAINING_RUN_TASK"
# The settings each launcher reads; setting one for another launcher is refused, not ignored.
LAUNCHER_SETTINGS = {
    "k8s": (POD_SPEC_VAR, IMAGE_VAR, NAMESPACE_VAR),
    "ecs": (RUN_TASK_VAR,),
}
# An environment variable whose value is a credential, or may hold one (a tracking URI with a
# password): it reaches a pod or task by reference (a Secret, Secrets Manager), never as text.
CREDENTIAL_VAR = re.compile(
    r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|^MLFLOW_TRACKING_URI$", re.IGNORECASE
)


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
    retrain_min_images: int = 200
    model_max_age_h: float = 168.0
    retrain_cron: str = "0 3 * * *"
    retrain_schedule_on: bool = False
    # CV_ASSETS_TRAIN and CV_ASSETS_GATE: the team's recipe over the code's (measured) defaults.
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    gate_defaults: Mapping[str, Any] = field(default_factory=dict)
    event_train: Mapping[str, Any] = field(default_factory=dict)
    sensor_interval_s: int = 15
    training_run_tags: Mapping[str, str] = field(default_factory=dict)
    # CV_ASSETS_CLASS_ALIASES: other names of the platform's classes in imported annotations.
    class_aliases: Mapping[str, str] = field(default_factory=dict)
    # Label Studio (annotation rounds): its URL, its API token (a secret: only ever passed on as
    # dg.EnvVar), and the folder it serves round images from (its local-files document root).
    labelstudio_url: str = "http://127.0.0.1:8080"
    labelstudio_token: str | None = None
    labelstudio_files: str = ""
    # The release channel's Ed25519 signing key: a file, or the PEM itself (a secret: never
    # printed; resources get it as dg.EnvVar). ``stable`` follows ``beta`` on its own if "auto".
    release_key_file: str | None = None
    release_key: str | None = field(default=None, repr=False)
    release_stable: str = "manual"
    # The export environment's python (LiteRT and Core ML converters; make export-install), and
    # whether the phones' files are made at all (a team whose apps run ONNX Runtime says 0).
    export_python: str = ""
    phone_files: bool = True
    # Field telemetry: a day is judged once it has been over this long (late events from apps'
    # offline queues); a day that gains events later is judged again.
    field_settle_s: int = 1800
    # Where yolo_model's training process runs: "subprocess" (beside the run, the default),
    # "k8s" (a pod from ``training_pod_spec``, in ``training_image`` or the run's own image, in
    # ``training_namespace`` or the run's), "ecs" (a task from the RunTask request
    # ``training_run_task``). The documents are read and checked once, here.
    training_launcher: str = "subprocess"
    training_pod_spec: Mapping[str, Any] = field(default_factory=dict)
    training_image: str | None = None
    training_namespace: str | None = None
    training_run_task: Mapping[str, Any] = field(default_factory=dict)

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
        classes = tuple(c for c in classes if c)
        return cls(
            profile=profile,
            home=home,
            landing_root=e.get("CV_ASSETS_LANDING", landing),
            artifacts_root=e.get("CV_ASSETS_ARTIFACTS", artifacts),
            mlflow_tracking_uri=e.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            s3_endpoint_url=e.get("CV_ASSETS_S3_ENDPOINT_URL") or None,
            classes=classes,
            class_aliases=class_aliases(e.get("CV_ASSETS_CLASS_ALIASES", ""), classes),
            mlflow_ui_url=e.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            mlflow_artifact_root=e.get(
                "MLFLOW_ARTIFACT_ROOT",
                f"{root.rstrip('/')}/mlflow" if profile == "cloud" else str(home / "mlruns"),
            ),
            require_approval=_flag(e.get("CV_ASSETS_REQUIRE_APPROVAL", "0")),
            retrain_cooldown_s=int(e.get("CV_ASSETS_RETRAIN_COOLDOWN_S", "1800")),
            retrain_min_images=int(e.get("CV_ASSETS_RETRAIN_MIN_IMAGES", "200")),
            model_max_age_h=float(e.get("CV_ASSETS_MODEL_MAX_AGE_H", "168")),
            retrain_cron=e.get("CV_ASSETS_RETRAIN_CRON", "0 3 * * *"),
            retrain_schedule_on=_flag(e.get("CV_ASSETS_RETRAIN_SCHEDULE", "0")),
            train_defaults=train_defaults(e.get("CV_ASSETS_TRAIN", "")),
            gate_defaults=train_defaults(e.get("CV_ASSETS_GATE", ""), "CV_ASSETS_GATE"),
            event_train=train_defaults(
                e.get("CV_ASSETS_TRAIN_ON_EVENT", ""), "CV_ASSETS_TRAIN_ON_EVENT"
            ),
            sensor_interval_s=int(e.get("CV_ASSETS_SENSOR_INTERVAL", "15")),
            release_key_file=e.get("CV_ASSETS_RELEASE_KEY_FILE") or None,
            release_key=e.get("CV_ASSETS_RELEASE_KEY") or None,
            release_stable=_choice(
                e.get("CV_ASSETS_RELEASE_STABLE", "manual"),
                ("manual", "auto"),
                "CV_ASSETS_RELEASE_STABLE",
            ),
            export_python=e.get("CV_ASSETS_EXPORT_PYTHON", ""),
            phone_files=_flag(e.get("CV_ASSETS_PHONE_FILES", "1")),
            field_settle_s=int(e.get("CV_ASSETS_FIELD_SETTLE_S", "1800")),
            labelstudio_url=e.get("CV_ASSETS_LABELSTUDIO_URL", "http://127.0.0.1:8080"),
            labelstudio_token=e.get("CV_ASSETS_LABELSTUDIO_TOKEN") or None,
            labelstudio_files=e.get(
                "CV_ASSETS_LABELSTUDIO_FILES", str(home / "labelstudio" / "files")
            ),
            training_run_tags={
                # Structured tags (dagster-k8s/config, ecs overrides) are JSON strings on a run.
                str(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in train_defaults(
                    e.get("CV_ASSETS_TRAINING_RUN_TAGS", ""), "CV_ASSETS_TRAINING_RUN_TAGS"
                ).items()
            },
            **training_launch(e),
        )


def training_launch(e: Mapping[str, str]) -> dict[str, Any]:
    """``CV_ASSETS_TRAINING_LAUNCHER`` and the settings of the launcher it names, checked.

    ``k8s``: ``CV_ASSETS_TRAINING_POD_SPEC``, a Kubernetes PodSpec (YAML or JSON: a file's path,
    or the document itself), and optionally ``CV_ASSETS_TRAINING_IMAGE`` (default: the run's own
    image) and ``CV_ASSETS_TRAINING_NAMESPACE`` (default: the run's). ``ecs``:
    ``CV_ASSETS_TRAINING_RUN_TASK``, an ECS RunTask request (the same two forms). A credential in
    either document is refused: the pod or task takes it from a Secret by reference.
    """
    launcher = _choice(e.get(LAUNCHER_VAR) or "subprocess", TRAINING_LAUNCHERS, LAUNCHER_VAR)
    for owner, names in LAUNCHER_SETTINGS.items():
        for var in names:
            if e.get(var) and launcher != owner:
                raise ValueError(
                    f"{var} is set, but {LAUNCHER_VAR}={launcher} does not read it: set "
                    f"{LAUNCHER_VAR}={owner}, or unset {var}"
                )
    out: dict[str, Any] = {"training_launcher": launcher}
    if launcher == "k8s":
        spec = _document(e, POD_SPEC_VAR, "a Kubernetes PodSpec")
        for kind in ("containers", "initContainers", "init_containers"):
            for i, container in enumerate(spec.get(kind) or []):
                env = container.get("env") if isinstance(container, Mapping) else None
                _no_literal_credentials(env, POD_SPEC_VAR, f"{kind}[{i}].env")
        out |= {
            "training_pod_spec": spec,
            "training_image": e.get(IMAGE_VAR) or None,
            "training_namespace": e.get(NAMESPACE_VAR) or None,
        }
    elif launcher == "ecs":
        request = _document(e, RUN_TASK_VAR, "an ECS RunTask request")
        if not isinstance(request.get("taskDefinition"), str):
            raise ValueError(
                f"{RUN_TASK_VAR}: the RunTask request names no taskDefinition (the training "
                "task's family[:revision] or ARN)"
            )
        overrides = (request.get("overrides") or {}).get("containerOverrides") or []
        for i, override in enumerate(overrides):
            where = f"overrides.containerOverrides[{i}].environment"
            _no_literal_credentials(override.get("environment"), RUN_TASK_VAR, where)
        out["training_run_task"] = request
    return out


def _document(e: Mapping[str, str], var: str, what: str) -> dict[str, Any]:
    """The YAML or JSON mapping that ``var`` holds: a file's path, or the document itself."""
    text = e.get(var, "")
    if not text.strip():
        raise ValueError(
            f"{LAUNCHER_VAR}={e.get(LAUNCHER_VAR)} needs {var}: {what} (a file's path, or the "
            "document itself)"
        )
    inline = text.lstrip().startswith("{")
    where = f"{var}={'<inline>' if inline else text}"
    if not inline:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError(f"{where}: no such file (the working directory is {Path.cwd()})")
        text = path.read_text()
    try:
        value = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as err:
        raise ValueError(f"{where}: not valid YAML or JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping ({what}), got {type(value).__name__}")
    return value


def _no_literal_credentials(env: Any, var: str, where: str) -> None:
    for item in env or []:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("name", ""))
        if "value" in item and CREDENTIAL_VAR.search(name):
            raise ValueError(
                f"{var}: {where} gives {name} as a literal value, which the API and anyone who "
                "describes the pod or task can read: reference a Secret instead (Kubernetes: "
                "envFrom secretRef or valueFrom.secretKeyRef; ECS: the task definition's "
                "secrets)"
            )


def _choice(value: str, allowed: Sequence[str], var: str) -> str:
    if value not in allowed:
        raise ValueError(f"{var}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "on", "yes")


def train_defaults(text: str, var: str = "CV_ASSETS_TRAIN") -> dict[str, Any]:
    """A JSON object of training settings. ``CV_ASSETS_TRAIN``: what every run uses by default,
    automatic ones included (they carry no run config of their own). ``CV_ASSETS_TRAIN_ON_EVENT``:
    what a drift, degradation or scheduled retraining adds on top (say, a warm start)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{var} is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{var} must be a JSON object, got {text!r}")
    return value


def class_aliases(text: str, classes: Sequence[str]) -> dict[str, str]:
    """``CV_ASSETS_CLASS_ALIASES``: a JSON object of other names to the platform's class names
    (``{"car": "vehicle"}``), each target checked against the class list."""
    value = train_defaults(text, "CV_ASSETS_CLASS_ALIASES")
    bad = {k: v for k, v in value.items() if not isinstance(v, str) or v not in classes}
    if bad:
        raise ValueError(
            f"CV_ASSETS_CLASS_ALIASES: {json.dumps(bad)[:200]} must map names to the platform's "
            f"classes ({', '.join(classes)})"
        )
    return {str(k): str(v) for k, v in value.items()}
