"""Kubernetes (deploy/helm/): the values for the dagster/dagster chart, the instance config they
render to, the GPU training tags and the MLflow manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef

from cv_assets_tests.deploy.configs import DEPLOY, REPO, env_file, env_refs, load_yaml, set_env

pytestmark = pytest.mark.unit


def helm_values() -> Any:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


def test_helm_values_pin_dagsters_images_to_the_installed_dagster() -> None:
    values = helm_values()
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"]["tag"] == dagster.__version__


def test_helm_values_deploy_the_cv_assets_code_location_with_k8s_runs() -> None:
    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["image"]["tag"] not in ("", "latest")
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == "cv_assets.definitions"
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert {"name": "cv-assets-env"} in deployment["envConfigMaps"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    run_k8s = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert set(run_k8s) <= {
        "containerConfig",
        "podSpecConfig",
        "podTemplateSpecMetadata",
        "jobSpecConfig",
        "jobMetadata",
    }
    assert run_k8s["podSpecConfig"]["securityContext"]["runAsNonRoot"] is True
    assert values["migrate"]["enabled"] is True
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    assert logs["config"]["s3ComputeLogManager"]["bucket"] == {"env": "CV_ASSETS_LOG_BUCKET"}
    assert "CV_ASSETS_LOG_BUCKET" in env_file(DEPLOY / "helm" / "cv-assets.env.example")


def test_helm_run_queue_and_retries_render_to_a_valid_instance_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance config the chart builds from these values passes Dagster's validation.

    The translation mirrors the chart's templates (_run-coordinator.tpl, configmap-instance);
    that the chart itself renders it so is not checked here (no helm binary).
    """
    from dagster._core.run_coordinator import QueuedRunCoordinator, RunCoordinator

    daemon = helm_values()["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    retries, monitoring = daemon["runRetries"], daemon["runMonitoring"]
    rendered = {
        "storage": load_yaml(DEPLOY / "dagster.postgres.yaml")["storage"],
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": daemon["runCoordinator"]["type"],
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
            },
        },
        "run_retries": {
            "enabled": retries["enabled"],
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        },
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "telemetry": {"enabled": helm_values()["telemetry"]["enabled"]},
    }
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_retries"] == load_yaml(REPO / "dagster.yaml")["run_retries"]

    set_env(monkeypatch, env_refs(rendered))
    data = InstanceRef.from_dir(str(tmp_path)).run_coordinator_data
    assert data is not None
    coordinator = data.rehydrate(RunCoordinator)
    assert isinstance(coordinator, QueuedRunCoordinator)
    limits = coordinator.get_run_queue_config().tag_concurrency_limits
    assert {"key": "cv_assets/stage", "value": "training", "limit": 1} in limits
    assert {
        "key": "cv_assets/gpu_pool",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in limits


def test_training_run_tags_put_a_run_on_a_gpu_node() -> None:
    tags = load_yaml(DEPLOY / "helm" / "training-run-tags.yaml")
    k8s = tags["dagster-k8s/config"]
    assert set(k8s) <= {
        "container_config",
        "pod_spec_config",
        "pod_template_spec_metadata",
        "job_spec_config",
        "job_metadata",
    }
    assert int(k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    selector = k8s["pod_spec_config"]["node_selector"]
    assert selector and all(isinstance(v, str) for v in selector.values())
    tolerations = k8s["pod_spec_config"]["tolerations"]
    assert tolerations
    for toleration in tolerations:
        assert toleration["operator"] in ("Exists", "Equal")
        assert toleration["effect"] in ("NoSchedule", "PreferNoSchedule", "NoExecute")
        assert ("value" in toleration) == (toleration["operator"] == "Equal")
    assert tags["cv_assets/gpu_pool"] in selector.values()
    json.dumps(tags)  # run tag values travel as JSON


def test_mlflow_manifest_reads_its_database_uri_from_a_secret() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "helm" / "mlflow.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Deployment", "Service"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    assert container["args"][:2] == ["mlflow", "server"]
