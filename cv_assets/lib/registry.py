"""The model registry: MLflow registered versions, the ``champion`` alias, promotion history.

Every decision (the gate promoting a model, a person approving or rolling back) moves the alias
in MLflow and appends to a history that records who, when, why, and the metrics before and after.
The history lives in the artifact store (``registry/history.json``), written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cv_assets.lib.store import ArtifactStore

ALIAS = "champion"
HISTORY_KEY = "registry/history.json"
# What the champion alias points at, as one small file: ``cv-assets predict`` and apps read it
# without importing MLflow. Rewritten on every move of the alias.
CHAMPION_KEY = "registry/champion.json"
# Registry tag holding the URI of each mobile file format.
URI_TAGS = {"onnx_fp32": "onnx_uri", "onnx_int8": "onnx_int8_uri", "ort": "ort_uri"}
MOBILE_TAGS = (
    "onnx_uri",
    "onnx_int8_uri",
    "ort_uri",
    "app_format",
    "model_card_uri",
    "mobile_parity",
)
STATUSES = ("champion", "pending_approval", "archived", "rejected")


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(tags: dict[str, str], k: str) -> float | None:
    return float(tags[k]) if k in tags else None


class RegistryError(ValueError):
    pass


class Registry:
    def __init__(self, mlflow_client: Any, name: str, store: ArtifactStore) -> None:
        self.c, self.name, self.store = mlflow_client, name, store

    # --- reading -------------------------------------------------------------------------
    def _info(self, mv: Any) -> ModelVersion:
        t = dict(mv.tags or {})
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat()
        return ModelVersion(
            version=str(mv.version),
            status=t.get("status", "archived"),
            weights_uri=t.get("weights_uri", ""),
            weights_sha256=t.get("weights_sha256", ""),
            dataset_version=t.get("dataset_version", ""),
            mlflow_run_id=mv.run_id or "",
            map50=_f(t, "map50"),
            map50_95=_f(t, "map50_95"),
            imgsz=int(t["imgsz"]) if "imgsz" in t else None,
            class_names=json.loads(t.get("class_names", "[]")),
            created_at=created,
            mobile={k: t.get(k) or None for k in MOBILE_TAGS},
        )

    def versions(self) -> list[ModelVersion]:
        try:
            mvs = self.c.search_model_versions(f"name='{self.name}'")
        except Exception:  # no registered model yet
            return []
        return sorted((self._info(m) for m in mvs), key=lambda v: int(v.version))

    def get(self, version: str) -> ModelVersion:
        try:
            return self._info(self.c.get_model_version(self.name, str(version)))
        except Exception:
            raise RegistryError(f"model {self.name} has no version {version}") from None

    def champion(self) -> ModelVersion | None:
        try:
            return self._info(self.c.get_model_version_by_alias(self.name, ALIAS))
        except Exception:
            return None

    def history(self) -> list[dict[str, Any]]:
        if not self.store.exists(HISTORY_KEY):
            return []
        return json.loads(self.store.get_bytes(HISTORY_KEY))

    # --- writing -------------------------------------------------------------------------
    def register(self, source: str, run_id: str, tags: dict[str, str]) -> ModelVersion:
        """A new version for these weights, or the existing one with the same sha256."""
        sha = tags["weights_sha256"]
        for v in self.versions():
            if v.weights_sha256 == sha:
                return v
        try:
            self.c.get_registered_model(self.name)
        except Exception:
            self.c.create_registered_model(
                self.name, description="cv_assets object detector (YOLO)"
            )
        mv = self.c.create_model_version(self.name, source, run_id=run_id, tags=tags)
        return self._info(self.c.get_model_version(self.name, mv.version))

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
