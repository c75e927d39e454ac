"""The model registry: MLflow registered versions, the ``champion`` alias, promotion history.

A version is an MLflow 3 logged model (``lib.mlflow_model``: the app's ONNX file, its weights,
a signature; ``mlflow.onnx.load_model("models:/<name>@champion")`` and
``mlflow.pyfunc.load_model`` work on it). Its tags hold identities only (dataset version, weights
sha256, file URIs, class names, imgsz, status); its metrics (mAP...) are MLflow metrics of the
logged model and of the training run, read back into :class:`ModelVersion`.

Every decision (the gate promoting a model, a person approving or rolling back) moves the alias
in MLflow and appends to a history that records who, when, why, and the metrics before and after.
The history lives in the artifact store (``registry/history.json``), written atomically.

"No champion yet" is ``None``; a registry that cannot be read is a ``TrackingUnavailable`` naming
the tracking URI, never mistaken for "no champion".
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cv_assets.lib.core import layout
from cv_assets.lib.core.secrets import mask_uri
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking

log = logging.getLogger(__name__)

ALIAS = "champion"
HISTORY_KEY = layout.REGISTRY_HISTORY
# What the champion alias points at, as one small file: ``cv-assets predict`` and apps read it
# without importing MLflow. Rewritten on every move of the alias.
CHAMPION_KEY = layout.REGISTRY_CHAMPION
# Registry tag holding the URI of each mobile file format.
URI_TAGS = {"onnx_fp32": "onnx_uri", "onnx_int8": "onnx_int8_uri", "ort": "ort_uri",
            "tflite": "tflite_uri", "tflite_int8": "tflite_int8_uri",
            "mlpackage": "mlpackage_uri"}  # fmt: skip
MOBILE_TAGS = (
    *URI_TAGS.values(),
    "app_format",
    "model_card_uri",
    "mobile_parity",
    # "end2end" (final detections: YOLO26) or "anchors" (NMS in the app); absent before it was
    # recorded, which means anchors.
    "head_output",
)
STATUSES = ("registered", "champion", "pending_approval", "archived", "rejected", "failed")


# The metrics a ``ModelVersion`` carries. Each is read from, first found: the logged model's
# metrics (``k`` or ``test_k``), the run's (``test_k``, as evaluation logs them, or ``k``), then
# the tags of versions registered before metrics left the tags.
METRIC_KEYS = ("map50", "map50_95", "precision", "recall")


@dataclass
class ModelVersion:
    version: str
    status: str
    weights_uri: str
    weights_sha256: str
    dataset_version: str
    mlflow_run_id: str
    map50: float | None
    map50_95: float | None
    imgsz: int | None
    class_names: list[str]
    created_at: str
    mobile: dict[str, str | None]
    model_uri: str = ""  # ``models:/<model_id>``: the logged model ("" before logged models)
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_id_of(uri: str) -> str | None:
    """The logged model's id in ``models:/<model_id>`` (not ``models:/<name>/<version>``)."""
    rest = uri.removeprefix("models:/")
    return rest if rest != uri and rest.startswith("m-") and "/" not in rest else None


class RegistryError(ValueError):
    pass


class Registry:
    def __init__(self, mlflow_client: Any, name: str, store: ArtifactStore) -> None:
        self.c, self.name, self.store = mlflow_client, name, store

    # --- reading -------------------------------------------------------------------------
    def _metrics(self, mv: Any, tags: dict[str, str], model_id: str | None) -> dict[str, float]:
        found: dict[str, float] = {}
        if model_id:
            try:
                lm = self.c.get_logged_model(model_id)
            except Exception as e:
                if not tracking.is_missing(e):
                    raise tracking.unavailable(
                        self.c, e, f"reading model {model_id}"
                    ) from None  # the cause echoes the URI unmasked
            else:
                latest = {}
                for m in sorted(lm.metrics or [], key=lambda m: (m.step, m.timestamp)):
                    latest[m.key] = m.value
                for k in METRIC_KEYS:
                    if (v := latest.get(k, latest.get(f"test_{k}"))) is not None:
                        found[k] = float(v)
        if mv.run_id and any(k not in found for k in METRIC_KEYS):
            try:
                run = self.c.get_run(mv.run_id).data.metrics
            except Exception as e:
                if not tracking.is_missing(e):
                    raise tracking.unavailable(
                        self.c, e, f"reading run {mv.run_id}"
                    ) from None  # the cause echoes the URI unmasked
                run = {}
            for k in METRIC_KEYS:
                if k not in found and (v := run.get(f"test_{k}", run.get(k))) is not None:
                    found[k] = float(v)
        for k in METRIC_KEYS:
            if k not in found and k in tags:
                found[k] = float(tags[k])
        return found

    def _info(self, mv: Any) -> ModelVersion:
        t = dict(mv.tags or {})
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat()
        model_uri = t.get("model_uri", "")
        model_id = getattr(mv, "model_id", None) or model_id_of(model_uri)
        metrics = self._metrics(mv, t, model_id)
        return ModelVersion(
            version=str(mv.version),
            status=t.get("status", "archived"),
            weights_uri=t.get("weights_uri", ""),
            weights_sha256=t.get("weights_sha256", ""),
            dataset_version=t.get("dataset_version", ""),
            mlflow_run_id=mv.run_id or "",
            map50=metrics.get("map50"),
            map50_95=metrics.get("map50_95"),
            imgsz=int(t["imgsz"]) if "imgsz" in t else None,
            class_names=json.loads(t.get("class_names", "[]")),
            created_at=created,
            mobile={k: t.get(k) or None for k in MOBILE_TAGS},
            model_uri=model_uri or (f"models:/{model_id}" if model_id else ""),
            metrics=metrics,
        )

    def _registered_model(self) -> Any | None:
        """The registered model, ``None`` if there is none; any other failure names the URI."""
        try:
            return self.c.get_registered_model(self.name)
        except Exception as e:
            if tracking.is_missing(e):
                return None
            raise tracking.unavailable(
                self.c, e, f"reading registered model {self.name}"
            ) from None  # the cause echoes the URI unmasked

    def _raw_versions(self) -> list[Any]:
        try:
            return list(self.c.search_model_versions(f"name='{self.name}'"))
        except Exception as e:
            raise tracking.unavailable(
                self.c, e, f"listing versions of {self.name}"
            ) from None  # the cause echoes the URI unmasked

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first; ``[]`` when nothing is registered yet."""
        return sorted((self._info(m) for m in self._raw_versions()), key=lambda v: int(v.version))

    def get(self, version: str) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.c.get_model_version(self.name, str(version))
        except Exception as e:
            if tracking.is_missing(e) or (
                isinstance(e, MlflowException) and e.error_code == "INVALID_PARAMETER_VALUE"
            ):
                raise RegistryError(f"model {self.name} has no version {version}") from None
            raise tracking.unavailable(
                self.c, e, f"reading {self.name} v{version}"
            ) from None  # the cause echoes the URI unmasked
        return self._info(mv)

    def champion(self) -> ModelVersion | None:
        """The version the ``champion`` alias points at; ``None`` if no model or no alias yet."""
        rm = self._registered_model()
        version = (rm.aliases or {}).get(ALIAS) if rm is not None else None
        return None if version is None else self.get(str(version))

    def history(self) -> list[dict[str, Any]]:
        if not self.store.exists(HISTORY_KEY):
            return []
        return json.loads(self.store.get_bytes(HISTORY_KEY))

    # --- writing -------------------------------------------------------------------------
    def register(self, source: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """A new version for these weights, or the existing one with the same sha256.

        Args:
            source: the model: ``models:/<model_id>`` as ``mlflow_model.log_detector_model``
                returns it (it must be ``READY``), or a model directory's URI.
            run_id: the training run.
            tags: identities only (``weights_sha256`` is required; ``dataset_version``,
                ``weights_uri``, ``imgsz``, ``class_names``, ``status``, file URIs). Metrics
                belong to the logged model, not here.

        MLflow is asked before anything is written, so an unreachable server fails with its URI
        and leaves the registry as it was. The version is created with all its tags in one call;
        a registered model created for it is removed again if that call fails, so a retry starts
        clean and nothing half-made can be promoted.
        """
        sha = tags["weights_sha256"]
        rm = self._registered_model()  # the probe: raises, naming the URI, before any write
        if rm is not None:
            for mv in self._raw_versions():
                if (mv.tags or {}).get("weights_sha256") == sha:
                    return self._info(mv)
        tags = {k: str(v) for k, v in tags.items()}
        storage, model_id = source, model_id_of(source)
        if model_id:
            lm = self._ready_model(model_id)
            storage, run_id = lm.artifact_location, run_id or lm.source_run_id
            tags["model_uri"] = source
        created = False
        if rm is None:
            try:
                self.c.create_registered_model(
                    self.name, description="cv_assets object detector (YOLO)"
                )
                created = True
            except Exception as e:
                # Another run may have created it since the probe: that one is as good.
                if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise tracking.unavailable(
                        self.c, e, f"creating {self.name}"
                    ) from None  # the cause echoes the URI unmasked
        try:
            # The logged model's own files (what ``models:/<model_id>`` resolves to), given as
            # the source, and a run id: MLflow's SQL registry would otherwise look the model up
            # through the process-wide tracking URI instead of this client's (MLflow 3.17).
            mv = self.c.create_model_version(
                self.name, storage, run_id=run_id, tags=tags, model_id=model_id if run_id else None
            )
        except Exception as e:
            if created:
                self._drop_if_empty()
            if tracking.answered(e):
                raise RegistryError(
                    f"MLflow at {mask_uri(self.c.tracking_uri)} refused a version of {self.name} "
                    f"for weights {sha}: {e}"
                ) from e
            raise tracking.unavailable(
                self.c, e, f"registering a version of {self.name}"
            ) from None  # the cause echoes the URI unmasked
        if model_id:
            self._link(model_id, str(mv.version))
        return self.get(str(mv.version))

    def _ready_model(self, model_id: str) -> Any:
        from mlflow.entities import LoggedModelStatus

        try:
            lm = self.c.get_logged_model(model_id)
        except Exception as e:
            if tracking.is_missing(e):
                raise RegistryError(
                    f"models:/{model_id}: no such logged model at {mask_uri(self.c.tracking_uri)}"
                ) from None
            raise tracking.unavailable(
                self.c, e, f"reading model {model_id}"
            ) from None  # the cause echoes the URI unmasked
        if lm.status != LoggedModelStatus.READY:
            raise RegistryError(
                f"models:/{model_id} is {lm.status}, not READY: it was not logged completely; "
                "log it again"
            )
        return lm

    def _drop_if_empty(self) -> None:
        try:
            if not self._raw_versions():
                self.c.delete_registered_model(self.name)
        except Exception:  # the server that just failed may fail this too; empty is harmless
            log.warning("could not remove the empty registered model %s", self.name)

    def _link(self, model_id: str, version: str) -> None:
        """The logged model's list of versions (``mlflow.modelVersions``), as MLflow's UI shows."""
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        try:
            lm = self.c.get_logged_model(model_id)
            mvs = json.loads(lm.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
            entry = {"name": self.name, "version": version}
            if entry not in mvs:
                self.c.set_logged_model_tags(
                    model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*mvs, entry])}
                )
        except Exception as e:  # a display link: the version itself is complete
            log.warning("could not link model %s to %s v%s: %s", model_id, self.name, version, e)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.c.set_model_version_tag(self.name, version, k, v)

    def publish_champion(self) -> None:
        """Rewrite ``registry/champion.json`` from the alias (after it moved or its tags did)."""
        champ = self.champion()
        if champ is not None:
            pointer = champ.as_dict() | {"model_name": self.name}
            self.store.put_bytes(CHAMPION_KEY, json.dumps(pointer, indent=1).encode())

    def _set_status(self, version: str, status: str) -> None:
        self.c.set_model_version_tag(self.name, version, "status", status)

    def _append(self, entry: dict[str, Any]) -> dict[str, Any]:
        hist = self.history()
        hist.append(entry)
        self.store.put_bytes(HISTORY_KEY, json.dumps(hist, indent=1).encode())
        return entry

    def _entry(
        self, action: str, version: str, before: ModelVersion | None, who: str, why: str
    ) -> dict[str, Any]:
        after = self.get(version)
        return {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": action,
            "version": version,
            "previous": before.version if before else None,
            "who": who,
            "why": why,
            "metrics_before": {"map50": before.map50, "map50_95": before.map50_95}
            if before
            else None,
            "metrics_after": {"map50": after.map50, "map50_95": after.map50_95},
        }

    def promote(self, version: str, who: str, why: str, action: str = "promote") -> dict:
        """Move ``champion`` to ``version``; the previous champion becomes ``archived``."""
        target = self.get(version)
        before = self.champion()
        if before and before.version == target.version:
            raise RegistryError(f"version {version} is already the champion")
        self.c.set_registered_model_alias(self.name, ALIAS, target.version)
        self._set_status(target.version, "champion")
        if before:
            self._set_status(before.version, "archived")
        self.publish_champion()
        return self._append(self._entry(action, target.version, before, who, why))

    def settle_interrupted(self, keep: str, who: str) -> list[str]:
        """Mark ``failed`` every version still ``registered`` but ``keep``: a registration that
        died before its decision (promote or hold) was recorded. Its weights were blessed, so a
        person may still ``promote`` it; it never silently stays half-done."""
        settled = []
        for v in self.versions():
            if v.status == "registered" and v.version != keep:
                self._set_status(v.version, "failed")
                why = "registration was interrupted before the decision was recorded"
                self._append(self._entry("registration_failed", v.version, None, who, why))
                settled.append(v.version)
        return settled

    def hold_for_approval(self, version: str, who: str, why: str) -> dict:
        self._set_status(version, "pending_approval")
        return self._append(self._entry("pending_approval", version, self.champion(), who, why))

    def rollback(self, who: str, why: str) -> dict:
        """Back to the champion before the current one; repeated rollbacks keep going back."""
        current = self.champion()
        if current is None:
            raise RegistryError("there is no champion to roll back from")
        stack: list[str] = []
        for e in self.history():
            if e["action"] in ("promote", "approve"):
                stack.append(e["version"])
            elif e["action"] == "rollback" and stack:
                stack.pop()
        if len(stack) < 2 or stack[-1] != current.version:
            raise RegistryError(
                f"champion v{current.version} has no previous champion to go back to"
            )
        return self.promote(stack[-2], who, why, action="rollback")


def read_champion(store: ArtifactStore) -> dict[str, Any] | None:
    """The champion as last published, without MLflow (fast: for ``predict`` and apps)."""
    if not store.exists(CHAMPION_KEY):
        return None
    return json.loads(store.get_bytes(CHAMPION_KEY))
