"""The Dagster instance variants (deploy/dagster.*.yaml) and the gRPC workspace, validated by
Dagster's own config schemas and by the classes they name (dagster-postgres, dagster-aws)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._serdes import class_from_code_pointer

from cv_assets_tests.deploy.configs import (
    DEPLOY,
    REPO,
    env_refs,
    install_variant,
    load_yaml,
    set_env,
)

pytestmark = pytest.mark.unit

VARIANTS = sorted(DEPLOY.glob("dagster.*.yaml"))


def test_deploy_ships_the_postgres_and_ecs_instance_variants() -> None:
    assert {p.name for p in VARIANTS} >= {"dagster.postgres.yaml", "dagster.ecs.yaml"}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.name)
def test_instance_variant_passes_dagsters_own_instance_validation(
    variant: Path, tmp_path: Path
) -> None:
    config, custom_class = dagster_instance_config(str(install_variant(variant, tmp_path)))
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["compute_logs"]["class"] == "S3ComputeLogManager"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.name)
def test_instance_variant_mirrors_the_embedded_defaults_run_rules(variant: Path) -> None:
    """One training at a time, one run per GPU pool, one step per pool, crash-only retries."""
    embedded = load_yaml(REPO / "dagster.yaml")
    config = load_yaml(variant)
    limits = {
        (lim["key"], json.dumps(lim.get("value"), sort_keys=True)): lim["limit"]
        for lim in config["concurrency"]["runs"]["tag_concurrency_limits"]
    }
    assert limits[("cv_assets/stage", '"training"')] == 1
    assert limits[("cv_assets/gpu_pool", '{"applyLimitPerUniqueValue": true}')] == 1
    assert config["concurrency"]["pools"] == embedded["concurrency"]["pools"]
    assert config["run_retries"] == embedded["run_retries"]
    assert config["run_monitoring"]["enabled"] is True
    assert config["telemetry"] == {"enabled": False}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda p: p.name)
def test_instance_variant_classes_load_through_their_own_schemas(
    variant: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres and dagster-aws import, accept the config and read it from the env."""
    from dagster._core.launcher import RunLauncher
    from dagster._core.storage.compute_log_manager import ComputeLogManager
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    env = set_env(monkeypatch, env_refs(load_yaml(variant)))
    ref = InstanceRef.from_dir(str(install_variant(variant, tmp_path)))

    storage = ref.storage_data
    assert storage is not None
    assert (storage.module_name, storage.class_name) == (
        "dagster_postgres",
        "DagsterPostgresStorage",
    )
    storage_class: Any = class_from_code_pointer(storage.module_name, storage.class_name)
    result = process_config(storage_class.config_type(), yaml.safe_load(storage.config_yaml))
    assert result.success, result.errors
    assert result.value is not None
    assert result.value["postgres_db"]["password"] == env["DAGSTER_PG_PASSWORD"]

    logs = ref.compute_logs_data.rehydrate(ComputeLogManager)
    assert isinstance(logs, S3ComputeLogManager)
    assert logs._s3_bucket == env["CV_ASSETS_LOG_BUCKET"]

    assert ref.run_launcher_data is not None
    launcher = ref.run_launcher_data.rehydrate(RunLauncher)
    if variant.name == "dagster.ecs.yaml":
        from dagster_aws.ecs import EcsRunLauncher

        # The constructor checks run_task_kwargs against botocore's RunTask model, the prefix
        # length and the propagated tags; no AWS call is made with a task definition dict.
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.task_definition_dict["log_group"] == env["CV_ASSETS_ECS_LOG_GROUP"]
        assert launcher.task_role_arn == env["CV_ASSETS_ECS_TASK_ROLE_ARN"]
        assert launcher.secrets == [
            {"name": "DAGSTER_PG_PASSWORD", "valueFrom": env["CV_ASSETS_PG_PASSWORD_SECRET_ARN"]}
        ]
        assert launcher.secrets_tags == []
    else:
        assert type(launcher).__name__ == "DefaultRunLauncher"


def test_a_missing_password_variable_stops_the_postgres_storage_from_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = DEPLOY / "dagster.postgres.yaml"
    set_env(monkeypatch, env_refs(load_yaml(variant)))
    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    storage = InstanceRef.from_dir(str(install_variant(variant, tmp_path))).storage_data
    assert storage is not None
    storage_class: Any = class_from_code_pointer(storage.module_name, storage.class_name)
    result = process_config(storage_class.config_type(), yaml.safe_load(storage.config_yaml))
    assert not result.success
    assert "DAGSTER_PG_PASSWORD" in str(result.errors)


def test_grpc_workspace_passes_dagsters_workspace_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_yaml(DEPLOY / "workspace.grpc.yaml")
    monkeypatch.delenv("CV_ASSETS_CODE_SERVER_HOST", raising=False)
    assert not process_workspace_config(config).success  # the host comes from the environment
    monkeypatch.setenv("CV_ASSETS_CODE_SERVER_HOST", "code-server")
    result = process_workspace_config(config)
    assert result.success, result.errors
    processed: Any = result.value
    assert processed["load_from"][0]["grpc_server"]["host"] == "code-server"
    (entry,) = config["load_from"]
    assert entry["grpc_server"] == {
        "host": {"env": "CV_ASSETS_CODE_SERVER_HOST"},
        "port": 4000,
        "location_name": "cv_assets",
    }
