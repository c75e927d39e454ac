"""The ECS files (deploy/ecs/): task definitions and run tags against botocore's own models of
the requests, and the IAM policies, each rendered from ecs.env.example as the README does."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from cv_assets_tests.deploy.configs import (
    DEPLOY,
    env_file,
    env_refs,
    holds_credential,
    image_file,
    load_yaml,
)

pytestmark = pytest.mark.unit

ECS_TASKS = ["webserver", "daemon", "code-server", "mlflow"]
DAGSTER_ECS_TASKS = ["webserver", "daemon", "code-server"]


def ecs_env() -> dict[str, str]:
    return env_file(DEPLOY / "ecs" / "ecs.env.example")


def render(path: Path, env: Mapping[str, str]) -> Any:
    """envsubst, as deploy/README.md does it, then JSON."""
    text = path.read_text()
    missing = set(re.findall(r"\$\{(\w+)\}", text)) - set(env)
    assert not missing, f"{path.name}: {sorted(missing)} not in deploy/ecs/ecs.env.example"
    return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text))


ECS_MODEL = botocore.session.get_session().get_service_model("ecs")


@pytest.mark.parametrize("task", ECS_TASKS)
def test_ecs_task_definition_is_a_valid_register_request(task: str) -> None:
    request = render(DEPLOY / "ecs" / f"{task}.json", ecs_env())
    shape = ECS_MODEL.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    (container,) = request["containerDefinitions"]
    assert container["image"] == ecs_env()["CV_ASSETS_IMAGE"]
    assert container["healthCheck"]["command"] == ["CMD", "cv-assets-healthcheck"]
    names = {e["name"] for e in container["environment"]}
    assert not {n for n in names if holds_credential(n)}, "a credential in plain environment"
    assert all(s["valueFrom"].startswith("arn:aws:secretsmanager:") for s in container["secrets"])


@pytest.mark.parametrize("task", DAGSTER_ECS_TASKS)
def test_ecs_dagster_tasks_hold_every_variable_runs_and_the_instance_read(task: str) -> None:
    launcher = load_yaml(DEPLOY / "dagster.ecs.yaml")["run_launcher"]["config"]
    request = render(DEPLOY / "ecs" / f"{task}.json", ecs_env())
    (container,) = request["containerDefinitions"]
    env = {e["name"] for e in container["environment"]}
    secrets = {s["name"] for s in container["secrets"]}
    assert set(launcher["env_vars"]) <= env, sorted(set(launcher["env_vars"]) - env)
    assert env_refs(load_yaml(DEPLOY / "dagster.ecs.yaml")) <= env | secrets
    assert {"CV_ASSETS_INSTANCE", "CV_ASSETS_PROFILE", "CV_ASSETS_ROLE"} <= env
    if task == "code-server":
        current = next(e for e in container["environment"] if e["name"] == "DAGSTER_CURRENT_IMAGE")
        assert current["value"] == container["image"]


def test_ecs_training_run_tags_leave_the_run_on_fargate() -> None:
    """The GPU is the training task's (training.json), never the run task's."""
    tags = json.loads((DEPLOY / "ecs" / "training-run-tags.json").read_text())
    assert not {"ecs/container_overrides", "ecs/run_task_kwargs"} & set(tags)
    assert "GPU" not in json.dumps(tags) and "capacityProvider" not in json.dumps(tags)
    # The pool the queue limits to one training run is the provider the training task runs on.
    assert tags["cv_assets/gpu_pool"]


def training_task() -> dict[str, Any]:
    return render(DEPLOY / "ecs" / "training.json", ecs_env())


def test_ecs_training_task_definition_is_a_valid_register_request_with_a_gpu() -> None:
    request = training_task()
    shape = ECS_MODEL.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert "EC2" in request["requiresCompatibilities"]  # GPUs are EC2 capacity, not Fargate
    (container,) = request["containerDefinitions"]
    assert container["image"] == ecs_env()["CV_ASSETS_IMAGE"]
    assert container["command"] == ["python", "-m", "cv_assets.training_worker"]
    assert {"type": "GPU", "value": "1"} in container["resourceRequirements"]
    assert container["linuxParameters"]["sharedMemorySize"] >= 1024  # /dev/shm, in MiB
    # The Pipes messages come back through CloudWatch: the reader needs the awslogs stream.
    logs = container["logConfiguration"]
    assert logs["logDriver"] == "awslogs" and logs["options"]["awslogs-stream-prefix"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert not {n for n in env if holds_credential(n)}, "a credential in plain environment"
    assert env["MLFLOW_TRACKING_URI"] == ecs_env()["MLFLOW_TRACKING_URI"]
    assert all(
        s["valueFrom"].startswith("arn:aws:secretsmanager:") for s in container.get("secrets", [])
    )


def test_ecs_training_run_task_is_a_valid_request_for_that_task() -> None:
    path = image_file(ecs_env()["CV_ASSETS_TRAINING_RUN_TASK"])
    assert path == DEPLOY / "ecs" / "training-run-task.json"
    request = render(path, ecs_env())
    report = ParamValidator().validate(request, ECS_MODEL.operation_model("RunTask").input_shape)
    assert not report.has_errors(), report.generate_report()
    task = training_task()
    assert request["taskDefinition"] == task["family"]
    (override,) = request["overrides"]["containerOverrides"]
    assert override == {"name": task["containerDefinitions"][0]["name"]}
    (provider,) = request["capacityProviderStrategy"]
    assert provider["capacityProvider"] == "cv-assets-gpu"
    # Cluster and network are the run task's own, found at run time (EcsTrainingLauncher).
    assert "cluster" not in request and "networkConfiguration" not in request


def test_ecs_code_server_environment_trains_in_the_gpu_task(tmp_path: Path) -> None:
    """The code server's environment, as it and every run task read it, binds the ECS launcher
    to the RunTask request the image holds: configuration only."""
    from cv_assets.definitions import build_defs
    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.resources.training import EcsTrainingLauncher

    (container,) = render(DEPLOY / "ecs" / "code-server.json", ecs_env())["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["CV_ASSETS_TRAINING_LAUNCHER"] == "ecs"
    env["CV_ASSETS_TRAINING_RUN_TASK"] = str(image_file(env["CV_ASSETS_TRAINING_RUN_TASK"]))
    defs = build_defs(PlatformConfig.from_env(env | {"CV_ASSETS_HOME": str(tmp_path)}))
    launcher = (defs.resources or {})["pipes"]
    assert isinstance(launcher, EcsTrainingLauncher)
    assert launcher.run_task == json.loads((DEPLOY / "ecs" / "training-run-task.json").read_text())


@pytest.mark.parametrize("policy", ["task-role-policy.json", "execution-role-policy.json"])
def test_ecs_iam_policies_render_to_valid_policy_documents(policy: str) -> None:
    doc = render(DEPLOY / "ecs" / policy, ecs_env())
    assert doc["Version"] == "2012-10-17"
    assert doc["Statement"]
    for statement in doc["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert statement["Action"] and statement["Resource"]
    actions: set[str] = set()
    for statement in doc["Statement"]:
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    if policy == "task-role-policy.json":
        assert {"ecs:RunTask", "ecs:RegisterTaskDefinition", "iam:PassRole"} <= actions
