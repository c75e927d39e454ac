"""``cv-assets lineage``: where a registered model came from, link by link.

The chain runs batches -> dataset version -> weights -> mobile files. Every link is read from
the Dagster event log (materialization metadata and the ``input_event_pointer`` tags Dagster
records for each input a step loaded) and from MLflow, never from file names or "the newest
file", so the lineage of an old version stays true after newer trainings. Hashes that the
records claim are checked against the files themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from cv_assets.lib.core import layout
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore, sha256_bytes, sha256_file
from cv_assets.lib.mobile.release import FORMATS
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import URI_TAGS, ModelVersion, Registry, RegistryError
from cv_assets.read_side import (
    materializations,
    metadata_of,
    open_instance,
    open_store,
    registry_for,
)

# Dagster writes this tag on each materialization, per input, naming the storage id of the
# upstream materialization the step actually loaded: the same link the UI draws.
POINTER_TAG = "dagster/input_event_pointer/"
DATA_VERSION_TAG = "dagster/data_version"


class LineageError(LookupError):
    """The model version asked for does not exist (or there is no champion)."""


@dataclass(frozen=True)
class Mat:
    """One materialization from the event log: what it recorded and the run that made it."""

    asset: str
    storage_id: int
    run_id: str
    partition: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]

    def pointer(self, upstream: str) -> int | None:
        value = self.tags.get(POINTER_TAG + upstream)
        return int(value) if value and value.isdigit() else None


def _mats(
    instance: dg.DagsterInstance,
    asset: str,
    partition: str | None = None,
    before: int | None = None,
    storage_id: int | None = None,
) -> list[Mat]:
    """Materializations of ``asset``, newest first."""
    return [
        Mat(asset, r.storage_id, r.run_id, m.partition, metadata_of(m), dict(m.tags or {}))
        for r in materializations(instance, asset, partition, before, storage_id)
        if (m := r.asset_materialization) is not None
    ]


def _upstream(
    instance: dg.DagsterInstance, mat: Mat | None, asset: str, ok: Callable[[Mat], bool]
) -> Mat | None:
    """The ``asset`` materialization that ``mat``'s step loaded, if recorded and consistent."""
    ptr = mat.pointer(asset) if mat else None
    if ptr is None:
        return None
    found = _mats(instance, asset, storage_id=ptr)
    return found[0] if found and ok(found[0]) else None


def _run(mat: Mat | None) -> dict[str, Any] | None:
    if mat is None:
        return None
    return {"dagster_run_id": mat.run_id, "ui_path": f"/runs/{mat.run_id}"}


def _actual_sha256(store: ArtifactStore, uri: str) -> str | None:
    """The file's hash as it is now; None when it is gone."""
    try:
        key = store.key_of(uri)
        local = store.local_path(key)
        return sha256_file(local) if local is not None else sha256_bytes(store.get_bytes(key))
    except Exception:  # a missing object raises differently on disk and on each S3 client
        return None


def _file(
    store: ArtifactStore, uri: str, recorded: str | None, what: str, problems: list[str]
) -> dict[str, Any]:
    actual = _actual_sha256(store, uri)
    if actual is None:
        problems.append(f"{what}: {uri} cannot be read from the artifact store {store.root}")
    elif recorded and actual != recorded:
        problems.append(f"{what}: {uri} hashes to {actual}, its record says {recorded}")
    return {
        "uri": uri,
        "sha256": recorded or actual,
        "verified": bool(recorded) and actual == recorded,
    }


def resolve_version(reg: Registry, version: str | None) -> ModelVersion:
    known = ", ".join(f"v{v.version}" for v in reg.versions()) or "none"
    if version is None:
        champ = reg.champion()
        if champ is None:
            raise LineageError(
                f"model {reg.name} has no champion yet (registered versions: {known})"
                + ("; name one: cv-assets lineage VERSION" if known != "none" else "")
            )
        return champ
    try:
        return reg.get(version.removeprefix("v"))
    except RegistryError:
        raise LineageError(
            f"model {reg.name} has no version {version} (registered versions: {known})"
        ) from None


def _batches(
    instance: dg.DagsterInstance, dataset: Mat, problems: list[str]
) -> list[dict[str, Any]]:
    """Each batch the dataset snapshot read, as validated just before the snapshot was taken."""
    out = []
    for b in dataset.metadata.get("batch_ids") or []:
        val = next(iter(_mats(instance, "validated_batch", b, before=dataset.storage_id)), None)
        vmd = val.metadata if val else {}
        raw = _upstream(instance, val, "raw_batch", lambda m, b=b: m.partition == b)
        if raw is None and val is not None:
            raw = next(iter(_mats(instance, "raw_batch", b, before=val.storage_id)), None)
        manifests = {m.metadata.get("manifest_sha256") for m in (val, raw) if m is not None}
        if len(manifests) > 1:
            problems.append(f"{b}: raw_batch and validated_batch name different manifests")
        out.append(
            {
                "batch_id": b,
                "landed": vmd.get("landed"),
                "accepted": vmd.get("accepted"),
                "quarantined": vmd.get("quarantined"),
                "manifest_sha256": vmd.get("manifest_sha256"),
                "validated_in": _run(val),
                "raw_copy_in": _run(raw),
            }
        )
    return out


def _mobile(
    instance: dg.DagsterInstance,
    store: ArtifactStore,
    mv: ModelVersion,
    problems: list[str],
) -> dict[str, Any] | None:
    """The files the registry names for this version, with the release record that proved them."""
    named = {fmt: uri for fmt, tag in URI_TAGS.items() if (uri := mv.mobile.get(tag))}
    if not named:
        return None

    def same_files(m: Mat) -> bool:
        return all(m.metadata.get(f"{fmt}_uri") == uri for fmt, uri in named.items())

    # The newest match: a re-registered version carries its newest files (champion_model).
    mat = next((m for m in _mats(instance, "mobile_model") if same_files(m)), None)
    record: dict[str, Any] = {}
    key = mat.tags.get(DATA_VERSION_TAG) if mat else None
    # mobile_model's data version is its release key; build_mobile_release writes this record.
    if key and store.exists(layout.mobile_release(key)):
        record = json.loads(store.get_bytes(layout.mobile_release(key)))
    if record and record.get("weights_sha256") != mv.weights_sha256:
        problems.append(
            f"mobile release {key} was converted from weights {record.get('weights_sha256')}, "
            f"not v{mv.version}'s {mv.weights_sha256}"
        )
    if mat is None:
        problems.append(f"v{mv.version}'s mobile files are in no mobile_model materialization")
    files = []
    for fmt in FORMATS:
        if fmt not in named:
            continue
        rec = (record.get("files") or {}).get(fmt) or {}
        entry = _file(store, named[fmt], rec.get("sha256"), f"mobile file {fmt}", problems)
        files.append({"format": fmt, "bytes": rec.get("size")} | entry)
    return {
        "app_format": mv.mobile.get("app_format"),
        "release_key": key,
        "converted_in": _run(mat),
        "files": files,
    }


def _mlflow_run(cfg: PlatformConfig, reg: Registry, run_id: str) -> dict[str, Any]:
    try:
        run = reg.c.get_run(run_id)
    except Exception:  # deleted or unreachable: the lineage still shows what Dagster recorded
        return {"run_id": run_id, "found": False}
    return {
        "run_id": run_id,
        "found": True,
        "url": tracking.run_url(cfg.mlflow_ui_url, run.info.experiment_id, run_id),
        "status": run.info.status,
        "dataset_version": run.data.tags.get("dataset_version"),
        "cache_key": run.data.tags.get("cache_key"),
        "warm_start_sha256": run.data.tags.get("warm_start_sha256") or None,
        "params": dict(run.data.params),
    }


def collect_lineage(cfg: PlatformConfig, version: str | None = None) -> dict:
    """The chain of ``version`` (default: the champion); ``LineageError`` if there is none."""
    reg = registry_for(cfg)
    mv = resolve_version(reg, version)
    store = open_store(cfg)
    problems: list[str] = []
    instance = open_instance(cfg)
    try:
        registrations = [
            m
            for m in _mats(instance, "champion_model")
            if str(m.metadata.get("version")) == mv.version
        ]
        registered = registrations[-1] if registrations else None  # the oldest: its birth

        def same_weights(m: Mat) -> bool:
            return m.metadata.get("weights_sha256") == mv.weights_sha256

        yolo = _upstream(instance, registered, "yolo_model", same_weights)
        if yolo is None:  # no pointer recorded: the oldest training of these weights in MLflow
            trained = [
                m
                for m in _mats(instance, "yolo_model")
                if same_weights(m) and m.metadata.get("mlflow_run_id") == mv.mlflow_run_id
            ]
            yolo = trained[-1] if trained else None

        def same_dataset(m: Mat) -> bool:
            return m.metadata.get("dataset_version") == mv.dataset_version

        dataset = _upstream(instance, yolo, "training_dataset", same_dataset)
        if dataset is None:  # else the newest snapshot of that version the training could read
            before = yolo.storage_id if yolo else None
            snaps = _mats(instance, "training_dataset", before=before)
            dataset = next((m for m in snaps if same_dataset(m)), None)
        # None, not []: an older snapshot that did not record its batch ids is not "no batches".
        batches = (
            _batches(instance, dataset, problems)
            if dataset and "batch_ids" in dataset.metadata
            else None
        )
        mobile = _mobile(instance, store, mv, problems)
    finally:
        instance.dispose()

    mlflow = _mlflow_run(cfg, reg, mv.mlflow_run_id)
    weights = _file(store, mv.weights_uri, mv.weights_sha256, "weights", problems)
    if yolo is None:
        problems.append(
            f"no yolo_model materialization in the event log has weights {mv.weights_sha256}"
        )
    elif yolo.metadata.get("mlflow_run_id") != mv.mlflow_run_id:
        problems.append(
            f"yolo_model in run {yolo.run_id} names MLflow run {yolo.metadata.get('mlflow_run_id')}"
            f", the registry {mv.mlflow_run_id}"
        )
    if dataset is None:
        problems.append(f"no training_dataset materialization has version {mv.dataset_version}")
    if mlflow.get("found") and mlflow.get("dataset_version") != mv.dataset_version:
        problems.append(
            f"MLflow run {mv.mlflow_run_id} trained on dataset {mlflow.get('dataset_version')}, "
            f"the registry says {mv.dataset_version}"
        )
    dmd = dataset.metadata if dataset else {}
    return {
        "model": {
            "name": reg.name,
            "version": mv.version,
            "status": mv.status,
            "map50": mv.map50,
            "map50_95": mv.map50_95,
            "registry_url": tracking.model_url(cfg.mlflow_ui_url, reg.name, mv.version),
            "registered_in": _run(registered),
        },
        "batches": batches,
        "dataset": {
            "version": mv.dataset_version,
            "images": dmd.get("images"),
            "train": dmd.get("train_images"),
            "val": dmd.get("val_images"),
            "test": dmd.get("test_images"),
            "snapshot_in": _run(dataset),
        },
        "weights": weights
        | {
            "mlflow_run": mlflow,
            "trained_in": _run(yolo),
            "reused_existing_weights": (
                yolo.metadata.get("reused_existing_weights") if yolo else None
            ),
        },
        "mobile": mobile,
        "problems": problems,
    }


def _in(link: dict[str, Any] | None, verb: str) -> str:
    return f"; {verb} in Dagster run {link['ui_path']}" if link else "; not in the event log"


def _hash(f: dict[str, Any]) -> str:
    return f"sha256 {f['sha256']} ({'verified' if f['verified'] else 'NOT VERIFIED'})"


def render_lineage(doc: dict[str, Any]) -> str:
    m, d, w, mob = doc["model"], doc["dataset"], doc["weights"], doc["mobile"]
    bs = doc["batches"]

    def total(k: str) -> int:
        return sum(int(b[k] or 0) for b in bs or [])

    lines = [
        f"model {m['name']} v{m['version']} [{m['status']}]: mAP50 {m['map50']}, "
        f"mAP50-95 {m['map50_95']}" + _in(m["registered_in"], "registered"),
        f"1. batches ({len(bs)}): {total('landed')} landed = {total('accepted')} accepted "
        f"+ {total('quarantined')} quarantined"
        if bs is not None
        else "1. batches: not recorded (no training_dataset materialization with batch_ids)",
    ]
    for b in bs or []:
        lines.append(
            f"   {b['batch_id']}: {b['landed']} landed, {b['accepted']} accepted, "
            f"{b['quarantined']} quarantined; manifest sha256 {b['manifest_sha256']}"
            + _in(b["validated_in"], "validated")
        )
    lines.append(
        f"2. dataset {d['version']}: {d['images']} images "
        f"(train {d['train']}, val {d['val']}, test {d['test']})"
        + _in(d["snapshot_in"], "snapshot")
    )
    r = w["mlflow_run"]
    lines += [
        f"3. weights {_hash(w)}",
        f"   {w['uri']}",
        f"   MLflow run {r['run_id']}"
        + (f" {r['url']}" if r["found"] else " (not found in MLflow)")
        + _in(w["trained_in"], "trained"),
    ]
    if r.get("warm_start_sha256"):
        lines.append(f"   warm-started from weights {r['warm_start_sha256']}")
    if mob is None:
        lines.append("4. mobile files: none registered for this version")
    else:
        lines.append(
            f"4. mobile files (app file: {mob['app_format']})"
            + _in(mob["converted_in"], "converted")
        )
        for f in mob["files"]:
            lines.append(f"   {f['format']}: {_hash(f)} {f['uri']}")
    if doc["problems"]:
        lines.append("PROBLEMS:")
        lines += [f"  - {p}" for p in doc["problems"]]
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``cv-assets lineage [VERSION] [--json]``."""
    try:
        doc = collect_lineage(cfg, version=args.version)
    except LineageError as e:
        print(f"cv-assets lineage: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2, default=str) if args.json else render_lineage(doc))
    # A hash that no longer matches its record is worth a failing exit code in a script.
    return 1 if doc["problems"] else 0
