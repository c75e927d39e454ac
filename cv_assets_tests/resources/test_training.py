"""The ``pipes`` resource the definitions bind, by configuration only: a subprocess by default, a
Kubernetes pod from deploy/'s pod spec, an ECS task from deploy/'s RunTask request; and the
refusal of a pod or task that could not reach the artifact store or MLflow.

No cluster and no AWS account here: the tests stop at the request each client would send.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from cv_assets.definitions import build_defs
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.resources.training import (
    LAUNCHER_PID_VAR,
    EcsTrainingLauncher,
    K8sTrainingLauncher,
    SubprocessTrainingLauncher,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
POD_SPEC = REPO / "deploy" / "helm" / "training-pod.yaml"
RUN_TASK = REPO / "deploy" / "ecs" / "training-run-task.json"
MODULE = "cv_assets.training_worker"
# A tracking URI that carries a credential: it must not reach a pod's spec or a task's request.
TRACKING_URI = "https://trainer:s3cr3t-token@mlflow.example.com"


def cloud_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "CV_ASSETS_HOME": str(tmp_path),
        "CV_ASSETS_PROFILE": "cloud",
        "CV_ASSETS_S3_ROOT": "s3://cv-assets-test/platform",
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        **env,
    }


def bound_pipes(cfg: PlatformConfig) -> Any:
    """The ``pipes`` resource the definitions built from ``cfg`` bind."""
    return (build_defs(cfg).resources or {})["pipes"]


def pipes_of(env: dict[str, str]) -> Any:
    return bound_pipes(PlatformConfig.from_env(env))


def test_the_default_binds_the_subprocess_client(cfg: PlatformConfig) -> None:
    pipes = bound_pipes(cfg)
    assert isinstance(pipes, SubprocessTrainingLauncher)
    assert isinstance(pipes.client(), dg.PipesSubprocessClient)


def test_the_subprocess_worker_is_told_the_pid_it_dies_with() -> None:
    from cv_assets import training_worker

    assert training_worker.LAUNCHER_PID_VAR == LAUNCHER_PID_VAR


def test_k8s_binds_the_kubernetes_client_with_deploys_pod_spec(tmp_path: Path) -> None:
    from dagster_k8s import PipesK8sClient
    from dagster_k8s.pipes import build_pod_body

    env = cloud_env(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=str(POD_SPEC)
    )
    pipes = pipes_of(env)
    assert isinstance(pipes, K8sTrainingLauncher)
    assert isinstance(pipes.client(), PipesK8sClient)
    assert pipes.pod_spec == yaml.safe_load(POD_SPEC.read_text())
    # The run's own image unless configured; the worker module as the command.
    request = pipes.pod_request(run_image="registry.example.com/cv-assets:0.1.0-cuda")
    assert request["image"] == "registry.example.com/cv-assets:0.1.0-cuda"
    assert request["command"] == ["python", "-m", MODULE]
    assert request["namespace"] is None  # the run pod's own
    # What PipesK8sClient sends the API server: the pod, with the Pipes context as its only
    # literal environment, and neither the tracking URI nor any other secret of this process.
    pod: Any = build_pod_body(
        pod_name="training",
        image=request["image"],
        command=request["command"],
        env_vars={"DAGSTER_PIPES_CONTEXT": "<context>", "DAGSTER_PIPES_MESSAGES": "<messages>"},
        base_pod_meta=None,
        base_pod_spec=request["base_pod_spec"],
    )
    (container,) = pod.spec.containers
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert {e.name for e in container.env} == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert {ref.secret_ref.name for ref in container.env_from if ref.secret_ref}
    assert "s3cr3t" not in json.dumps(request) and "s3cr3t" not in str(pod)


def test_k8s_image_and_namespace_come_from_their_settings(tmp_path: Path) -> None:
    env = cloud_env(
        tmp_path,
        CV_ASSETS_TRAINING_LAUNCHER="k8s",
        CV_ASSETS_TRAINING_POD_SPEC=str(POD_SPEC),
        CV_ASSETS_TRAINING_IMAGE="registry.example.com/cv-assets:0.2.0-cuda",
        CV_ASSETS_TRAINING_NAMESPACE="gpu-jobs",
    )
    pipes = pipes_of(env)
    assert isinstance(pipes, K8sTrainingLauncher)
    request = pipes.pod_request(run_image="registry.example.com/cv-assets:0.1.0-cpu")
    assert request["image"] == "registry.example.com/cv-assets:0.2.0-cuda"
    assert request["namespace"] == "gpu-jobs"
    bare = K8sTrainingLauncher(pod_spec={"containers": [{"name": "training"}]})
    with pytest.raises(dg.Failure, match="the training pod has no image"):
        bare.pod_request(run_image=None)


def test_a_pod_spec_kubernetes_would_refuse_fails_at_load(tmp_path: Path) -> None:
    spec = yaml.safe_load(POD_SPEC.read_text())
    spec["nodeSelecter"] = spec.pop("nodeSelector")  # a typo the API server would reject
    env = cloud_env(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="k8s", CV_ASSETS_TRAINING_POD_SPEC=json.dumps(spec)
    )
    with pytest.raises(ValueError) as e:
        pipes_of(env)
    assert str(e.value).startswith(
        "CV_ASSETS_TRAINING_POD_SPEC: not a pod spec the training can run in:"
    )
    assert "nodeSelecter" in str(e.value)


def test_ecs_binds_the_ecs_client_with_deploys_run_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_aws.pipes import PipesECSClient

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # boto3 needs one to build a client
    env = cloud_env(
        tmp_path, CV_ASSETS_TRAINING_LAUNCHER="ecs", CV_ASSETS_TRAINING_RUN_TASK=str(RUN_TASK)
    )
    pipes = pipes_of(env)
    assert isinstance(pipes, EcsTrainingLauncher)
    assert isinstance(pipes.client(), PipesECSClient)
    params = pipes.run_task_params()
    assert params["taskDefinition"] == json.loads(RUN_TASK.read_text())["taskDefinition"]
    (override,) = params["overrides"]["containerOverrides"]
    assert override == {"name": pipes.pipes_container(), "command": ["python", "-m", MODULE]}
    assert "environment" not in override  # nothing of this process's environment
    assert pipes.run_task == json.loads(RUN_TASK.read_text())  # each run gets a fresh copy


@pytest.mark.parametrize("launcher", ["k8s", "ecs"])
def test_a_pod_or_task_is_refused_a_store_or_mlflow_on_this_machines_disk(
    tmp_path: Path, launcher: str
) -> None:
    documents = {
        "k8s": {"CV_ASSETS_TRAINING_POD_SPEC": str(POD_SPEC)},
        "ecs": {"CV_ASSETS_TRAINING_RUN_TASK": str(RUN_TASK)},
    }[launcher]
    local = {"CV_ASSETS_HOME": str(tmp_path), "CV_ASSETS_TRAINING_LAUNCHER": launcher, **documents}
    what = "pod" if launcher == "k8s" else "task"
    with pytest.raises(ValueError) as store:
        pipes_of(local)
    assert str(store.value) == (
        f"CV_ASSETS_TRAINING_LAUNCHER={launcher} trains in a {what} of its own, which has no "
        "share of this machine's disk: the artifact store must be s3:// (CV_ASSETS_PROFILE=cloud "
        f"with CV_ASSETS_S3_ROOT, or CV_ASSETS_ARTIFACTS), not {tmp_path / 'artifacts'}"
    )
    sqlite = {**local, "CV_ASSETS_ARTIFACTS": "s3://cv-assets-test/artifacts"}
    with pytest.raises(ValueError) as tracking:
        pipes_of(sqlite)
    assert str(tracking.value).endswith(
        "MLFLOW_TRACKING_URI must name a tracking server (http://, https:// or a database), "
        "not a local sqlite"
    )
    served = {**sqlite, "MLFLOW_TRACKING_URI": TRACKING_URI}
    with pytest.raises(ValueError) as artifacts:
        pipes_of(served)
    assert "MLFLOW_ARTIFACT_ROOT must be a bucket (s3://)" in str(artifacts.value)
    ok = pipes_of({**served, "MLFLOW_ARTIFACT_ROOT": "s3://cv-assets-test/mlflow"})
    assert isinstance(ok, K8sTrainingLauncher if launcher == "k8s" else EcsTrainingLauncher)
