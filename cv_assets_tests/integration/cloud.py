"""The deployment's shape for a test: env as a user sets it, batches landed in S3, proofs.

``cloud_platform`` sets the environment a deployment sets (``deploy/README.md``), prepares the
home with ``deploy/dagster.postgres.yaml`` as its instance, and returns what the CLI would read.
``verify_store`` is the "nothing half-written" proof: every object that a JSON record in the
store points at (URI + sha256), every raw copy that a manifest lists, every label that a sample
table lists, is there and hashes to what was recorded.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from cv_assets.dev.home import prepare_home
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore, s3_client, sha256_bytes, split_s3_uri
from cv_assets.lib.ingest.names import is_portable_path
from cv_assets.lib.synth.batches import write_batches
from cv_assets_tests.integration.pg import PgCluster, postgres_dagster_yaml, postgres_instance_env


def cloud_platform(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    pg: PgCluster,
    db: str,
    bucket: str,
    s3_endpoint: str,
    platform_endpoint: str | None = None,
    tracking_uri: str,
) -> tuple[PlatformConfig, dg.DagsterInstance]:
    """``CV_ASSETS_PROFILE=cloud`` on ``bucket``/platform, Dagster on Postgres database ``db``.

    ``platform_endpoint`` is the S3 endpoint the platform talks to (a flaky proxy, say);
    MLflow's own artifact client always talks to ``s3_endpoint``.
    """
    for var in ("CV_ASSETS_LANDING", "CV_ASSETS_ARTIFACTS", "CV_ASSETS_TRAIN", "CV_ASSETS_GATE"):
        monkeypatch.delenv(var, raising=False)
    for k, v in {
        "CV_ASSETS_PROFILE": "cloud",
        "CV_ASSETS_HOME": str(tmp_path / "home"),
        "CV_ASSETS_S3_ROOT": f"{bucket}/platform",
        "CV_ASSETS_S3_ENDPOINT_URL": platform_endpoint or s3_endpoint,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ARTIFACT_ROOT": f"{bucket}/mlflow",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "CV_ASSETS_LOG_BUCKET": split_s3_uri(bucket)[0],
    }.items():
        monkeypatch.setenv(k, v)
    cfg = PlatformConfig.from_env()
    for k, v in postgres_instance_env(pg, db, cfg.dagster_home).items():
        monkeypatch.setenv(k, v)
    instance_yaml = tmp_path / "dagster.postgres.yaml"
    instance_yaml.write_text(yaml.safe_dump(postgres_dagster_yaml()))
    prepare_home(cfg, dagster_yaml=instance_yaml)  # also creates the schema, as `make ui` does
    return cfg, dg.DagsterInstance.from_config(str(cfg.dagster_home))


def land_in_s3(
    root: str, s3_endpoint: str, tmp_path: Path, batches: int, images: int, seed: int
) -> list[str]:
    """Synthetic batches uploaded as a producer does: images and labels first, batch.json last."""
    local = tmp_path / f"landing-src-{seed}"
    summaries = write_batches(local, batches=batches, images_per_batch=images, seed=seed, size=96)
    bucket, prefix = split_s3_uri(root)
    s3 = s3_client(s3_endpoint)
    for s in summaries:
        files = sorted(p for p in s.path.rglob("*") if p.is_file())
        for p in sorted(files, key=lambda p: p.name == "batch.json"):
            key = f"{prefix}/{s.batch_id}/{p.relative_to(s.path).as_posix()}"
            s3.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
    return [s.batch_id for s in summaries]


def bucket_keys(bucket: str, s3_endpoint: str) -> list[str]:
    name, _ = split_s3_uri(bucket)
    pages = s3_client(s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=name)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _refs(obj: Any) -> list[dict[str, Any]]:
    if isinstance(obj, dict):
        own = [obj] if {"uri", "sha256", "size"} <= obj.keys() else []
        return own + [r for v in obj.values() for r in _refs(v)]
    if isinstance(obj, list):
        return [r for v in obj for r in _refs(v)]
    return []


@dataclass
class Verified:
    refs: set[str] = field(default_factory=set)  # URIs whose recorded sha256 and size held
    raw_files: int = 0
    labels: int = 0
    images: int = 0


def verify_store(store: ArtifactStore) -> Verified:
    """Check every recorded hash against the bytes in the store; what was checked."""
    out = Verified()
    keys = store.list()
    for key in (k for k in keys if k.endswith(".json")):
        for ref in _refs(json.loads(store.get_bytes(key))):
            if ref["uri"].startswith(store.root):
                data = store.verify(ref)  # raises on a missing object or a wrong hash
                assert len(data) == ref["size"], f"{ref['uri']}: size {len(data)} != {ref['size']}"
                out.refs.add(ref["uri"])
    for key in (k for k in keys if k.startswith("raw/") and k.endswith("/manifest.json")):
        manifest = json.loads(store.get_bytes(key))
        base = key.removesuffix("manifest.json") + "files/"
        for e in manifest["files"]:
            if e["kind"] == "file" and is_portable_path(e["path"]):
                got = sha256_bytes(store.get_bytes(base + e["path"]))
                assert got == e["sha256"], f"{base}{e['path']}: sha256 {got} != {e['sha256']}"
                out.raw_files += 1
    for key in (k for k in keys if k.startswith("validated/") and k.endswith("/samples.parquet")):
        samples = pd.read_parquet(io.BytesIO(store.get_bytes(key)))
        for row in samples.to_dict("records"):
            label = store.get_bytes(store.key_of(str(row["label_uri"])))
            assert sha256_bytes(label) == row["label_sha256"], f"{row['label_uri']}: wrong sha256"
            image = store.get_bytes(store.key_of(str(row["image_uri"])))
            if not row["standardised"]:  # a passthrough copy is the landed file, byte for byte
                assert sha256_bytes(image) == row["sha256"], f"{row['image_uri']}: wrong sha256"
            else:
                from PIL import Image

                with Image.open(io.BytesIO(image)) as im:
                    im.load()
            out.labels += 1
            out.images += 1
    return out
