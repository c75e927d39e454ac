"""Kubernetes (deploy/helm/): the values for the dagster/dagster chart, the instance config they
render to, the training pod and run tags, and the MLflow manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef

from cv_assets_tests.deploy.configs import (
    DEPLOY,
    REPO,
    env_file,
    env_refs,
    holds_credential,
    image_file,
    load_yaml,
    set_env,
)

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


def training_pod() -> Any:
    return load_yaml(DEPLOY / "helm" / "training-pod.yaml")


def test_training_run_tags_leave_the_run_on_a_cpu_node() -> None:
    """The GPU is the training pod's (training-pod.yaml), never the run pod's."""
    tags = load_yaml(DEPLOY / "helm" / "training-run-tags.yaml")
    text = json.dumps(tags)  # run tag values travel as JSON
    for placement in ("nvidia.com/gpu", "node_selector", "tolerations", "gpu-pool"):
        assert placement not in text, placement
    run_k8s = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert "nvidia.com/gpu" not in json.dumps(run_k8s)
    # The pool the queue limits to one training run is the pool the training pod is placed on.
    assert tags["cv_assets/gpu_pool"] == training_pod()["nodeSelector"]["cv-assets/gpu-pool"]


def test_training_pod_spec_is_a_kubernetes_pod_spec_with_a_gpu_shm_and_a_deadline() -> None:
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    from cv_assets.defs.training.jobs import training_tags
    from cv_assets.lib.core.settings import PlatformConfig

    spec_class = kubernetes.client.V1PodSpec
    spec: Any = k8s_model_from_dict(spec_class, k8s_snake_case_dict(spec_class, training_pod()))
    assert spec.restart_policy == "Never"
    (container,) = spec.containers
    assert int(container.resources.limits["nvidia.com/gpu"]) == 1
    assert container.resources.requests["cpu"] and container.resources.requests["memory"]
    (shm,) = [m for m in container.volume_mounts if m.mount_path == "/dev/shm"]
    (volume,) = [v for v in spec.volumes if v.name == shm.name]
    assert volume.empty_dir.medium == "Memory" and volume.empty_dir.size_limit
    assert any(
        t.key == "nvidia.com/gpu" and t.operator == "Exists" and t.effect == "NoSchedule"
        for t in spec.tolerations
    )
    assert spec.node_selector["cv-assets/gpu-pool"]
    # Its own deadline, inside the run's: the pod ends before the run is failed for its time.
    run_limit = int(training_tags(PlatformConfig.from_env({}))["dagster/max_runtime"])
    assert 0 < spec.active_deadline_seconds < run_limit
    assert spec.security_context.run_as_non_root is True
    # The pod never calls the Kubernetes API: no token in it.
    assert spec.automount_service_account_token is False


def test_training_pod_takes_credentials_from_a_secret_by_reference() -> None:
    pod = training_pod()
    (container,) = pod["containers"]
    for item in container.get("env", []):
        name = item["name"]
        literal = "value" in item and (holds_credential(name) or name == "MLFLOW_TRACKING_URI")
        assert not literal, f"{name} is a literal value in the pod spec"
    secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
    assert secrets, "no Secret referenced"
    # The platform's settings come from the same ConfigMap as every pod of the deployment's.
    configmaps = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
    assert configmaps == ["cv-assets-env"]
    # The run's own service account (the chart's user-deployments one: its IRSA role).
    assert pod["serviceAccountName"].endswith("-user-deployments")


def test_the_configmap_alone_trains_in_the_gpu_pod(tmp_path: Path) -> None:
    """The ConfigMap's environment, as the code server and every run read it, binds the
    Kubernetes launcher to the pod spec the image holds: configuration only."""
    from cv_assets.definitions import build_defs
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.resources.training import K8sTrainingLauncher

    env = env_file(DEPLOY / "helm" / "cv-assets.env.example")
    assert env["CV_ASSETS_TRAINING_LAUNCHER"] == "k8s"
    in_image = env["CV_ASSETS_TRAINING_POD_SPEC"]
    assert image_file(in_image) == DEPLOY / "helm" / "training-pod.yaml"
    env |= {
        "CV_ASSETS_TRAINING_POD_SPEC": str(image_file(in_image)),
        "CV_ASSETS_HOME": str(tmp_path),
    }
    pipes = (build_defs(PlatformConfig.from_env(env)).resources or {})["pipes"]
    assert isinstance(pipes, K8sTrainingLauncher)
    assert pipes.pod_spec == training_pod()


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
