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

from cv_assets_tests.deploy.configs import DEPLOY, env_file, env_refs, holds_credential, load_yaml

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


def test_ecs_training_tags_are_valid_ecs_overrides() -> None:
    tags = json.loads((DEPLOY / "ecs" / "training-run-tags.json").read_text())
    validator = ParamValidator()
    override = validator.validate(
        tags["ecs/container_overrides"], ECS_MODEL.shape_for("ContainerOverride")
    )
    assert not override.has_errors(), override.generate_report()
    assert {"type": "GPU", "value": "1"} in tags["ecs/container_overrides"]["resourceRequirements"]
    run_task: Any = ECS_MODEL.operation_model("RunTask").input_shape
    kwargs = tags["ecs/run_task_kwargs"]
    assert set(kwargs) <= set(run_task.members)
    strategy = validator.validate(
        {"capacityProviderStrategy": kwargs["capacityProviderStrategy"]}, run_task
    )
    # The only error allowed is the missing taskDefinition, which the run launcher supplies.
    assert "capacityProviderStrategy" not in strategy.generate_report()
    assert tags["cv_assets/gpu_pool"]


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
