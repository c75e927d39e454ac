import json
import os
import subprocess
import sys

import dagster as dg
import pytest

from cv_assets.definitions import build_defs

pytestmark = pytest.mark.unit


def test_every_asset_has_description_group_owner_and_kind(cfg):
    graph = build_defs(cfg).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_batch", "validated_batch", "batch_features"} <= keys
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and "\n" not in node.description.strip(), key
        assert node.group_name != "default", key
        assert node.owners, key
        assert node.kinds, key


def test_kinds_say_what_each_asset_uses_and_s3_only_when_artifacts_are_in_a_bucket(cfg):
    from dataclasses import replace

    local = build_defs(cfg).resolve_asset_graph()
    kinds = {k.to_user_string(): local.get(k).kinds for k in local.get_all_asset_keys()}
    assert "pandera" in kinds["validated_batch"]
    assert "evidently" in kinds["drift_report"]
    assert {"pytorch", "mlflow"} <= kinds["yolo_model"]
    assert "onnx" in kinds["mobile_model"]
    assert not any("s3" in k for k in kinds.values())
    on_s3 = build_defs(replace(cfg, artifacts_root="s3://bucket/cv")).resolve_asset_graph()
    for key in on_s3.get_all_asset_keys():
        # Dagster shows at most three kinds per asset.
        assert on_s3.get(key).kinds == kinds[key.to_user_string()] | {"s3"}, key
        assert len(on_s3.get(key).kinds) <= 3, key


def test_landing_sensor_is_on_by_default(cfg):
    sensor = build_defs(cfg).resolve_sensor_def("landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_acceptance_check_is_blocking(cfg):
    from cv_assets.defs.ingest.assets import intake

    (spec,) = [s for s in intake.check_specs if s.name == "acceptance_rate_ok"]
    assert spec.blocking and spec.asset_key == dg.AssetKey("validated_batch")


def _load_in_subprocess(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    """Definitions read their settings at import, as a code server does: a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env=dict(os.environ) | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deployment_training_tags_reach_every_training_run_source():
    tags = {"cv_assets/gpu_pool": "a", "dagster-k8s/config": {"pod_spec_config": {"x": 1}}}
    code = (
        "import json; from cv_assets.definitions import defs; "
        "from cv_assets.defs.automation.sensors import retrain_automation as a; "
        "print(json.dumps([defs.resolve_job_def('training_job').tags, "
        "defs.resolve_job_def('hpo_sweep').tags, dict(a.run_tags)]))"
    )
    out = _load_in_subprocess({"CV_ASSETS_TRAINING_RUN_TAGS": json.dumps(tags)}, code)
    assert out.returncode == 0, out.stderr[-2000:]
    for run_tags in json.loads(out.stdout.strip().splitlines()[-1]):
        assert run_tags["cv_assets/gpu_pool"] == "a"
        assert json.loads(run_tags["dagster-k8s/config"]) == {"pod_spec_config": {"x": 1}}
        assert run_tags["cv_assets/stage"] == "training"


def test_training_recipe_from_the_environment_is_checked_at_load():
    code = "import cv_assets.definitions"
    bad = _load_in_subprocess({"CV_ASSETS_TRAIN": json.dumps({"epoch": 3})}, code)
    assert bad.returncode != 0 and "unknown training settings ['epoch']" in bad.stderr
    wrong = _load_in_subprocess({"CV_ASSETS_TRAIN": json.dumps({"epochs": "many"})}, code)
    assert wrong.returncode != 0 and "epochs" in wrong.stderr
    show = "from cv_assets.defs.training.config import TrainConfig as T; print(T().epochs)"
    ok = _load_in_subprocess({"CV_ASSETS_TRAIN": json.dumps({"epochs": 7})}, show)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1] == "7"


def test_a_password_in_the_tracking_uri_is_shown_as_its_variable_and_resolves_at_run_time(
    cfg, instance, monkeypatch
):
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource

    secret = "pa55-w0rd-7f3a"
    uri = f"postgresql://mlflow:{secret}@127.0.0.1:5432/mlflow"
    endpoint = f"http://minio:{secret}@127.0.0.1:9000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CV_ASSETS_S3_ENDPOINT_URL", endpoint)
    defs = build_defs(PlatformConfig.from_env())
    # What the UI's Resources page is drawn from: the repository snapshot the code server serves.
    snap = RepositorySnap.from_def(defs.get_repository_def())
    shown = {r.name: r.configured_values for r in snap.resources or []}
    assert secret not in serialize_value(snap)
    assert getattr(shown["mlflow"]["tracking_uri"], "name", None) == "MLFLOW_TRACKING_URI"
    assert getattr(shown["artifacts"]["s3_endpoint_url"], "name", None) == (
        "CV_ASSETS_S3_ENDPOINT_URL"
    )
    # In a run, the resources hold the real values.
    seen: dict[str, str | None] = {}

    @dg.asset
    def probe(mlflow: MlflowResource, artifacts: ArtifactStoreResource) -> None:
        seen.update(tracking_uri=mlflow.tracking_uri, endpoint=artifacts.s3_endpoint_url)

    built = defs.resources or {}
    resources = {k: built[k] for k in ("mlflow", "artifacts", "io_manager")}
    assert dg.materialize([probe], resources=resources, instance=instance).success
    assert seen == {"tracking_uri": uri, "endpoint": endpoint}


def test_the_embedded_default_tracking_uri_stays_a_literal_sqlite_path(cfg):
    mlflow = (build_defs(cfg).resources or {})["mlflow"]
    assert mlflow.tracking_uri == cfg.mlflow_tracking_uri
    assert mlflow.tracking_uri.startswith("sqlite:///")
