"""deploy/: everything that can be checked without a container engine, a cluster or AWS.

Each Dagster instance variant goes through Dagster's own dagster.yaml validation, and its
configurable classes (dagster-postgres, dagster-aws) through their own schemas and constructors;
the ECS task definitions through botocore's model of the RegisterTaskDefinition request; the
compose stack through the platform's own switch (PlatformConfig.from_env); the Helm values, the
Kubernetes manifests and the Dockerfile structurally. What these tests cannot prove is listed in
deploy/README.md ("What was validated, and what was not").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import botocore.session
import dagster
import pytest
import yaml
from botocore.validate import ParamValidator
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._serdes import class_from_code_pointer

from cv_assets.lib.core.settings import PlatformConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VARIANTS = sorted(DEPLOY.glob("dagster.*.yaml"))
ECS_TASKS = ["webserver", "daemon", "code-server", "mlflow"]
DAGSTER_ECS_TASKS = ["webserver", "daemon", "code-server"]
COMPOSE_FILES = ["docker-compose.yaml", "docker-compose.gpu.yaml"]

# A name that holds a credential ...
SECRET_NAME = re.compile(r"password|secret|token|access_key|private_key", re.IGNORECASE)
# Names that point at a credential without holding it: an ARN, the name of a Secret.
REFERENCE_NAME = re.compile(r"(_ARN|SecretName|_SECRET_NAME)$|^(secrets|envSecrets|secrets_tag)$")
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def holds_credential(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not REFERENCE_NAME.search(name)


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (compose / `set -a; .` style quotes removed)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every mapping entry, depth first."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, key, value
            yield from walk(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def env_refs(node: Any) -> set[str]:
    """Names of the environment variables a Dagster config reads (`{env: NAME}`)."""
    refs = set()
    for _, key, value in walk(node):
        if key == "env" and isinstance(value, str):
            refs.add(value)
    return refs


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose-style interpolation of every string in ``node``; raises on a missing required."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return value or ""

    if isinstance(node, str):
        return INTERPOLATION.sub(one, node.replace("$$", "\0")).replace("\0", "$")
    if isinstance(node, Mapping):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


def install_variant(variant: Path, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(variant, home / "dagster.yaml")
    return home


def set_env(monkeypatch: pytest.MonkeyPatch, names: set[str]) -> dict[str, str]:
    values = {
        name: f"http://{name.lower().replace('_', '-')}:9000"
        if name.endswith("_URL")
        else f"value-of-{name.lower()}"
        for name in names
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    return values


# --- Dagster instance variants ---------------------------------------------------------------


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


# --- Workspace, entrypoint, healthcheck -------------------------------------------------------


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


def _sh(script: str, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DEPLOY / script), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_entrypoint_installs_the_chosen_instance_config(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    env = {"DAGSTER_HOME": str(home), "CV_ASSETS_INSTANCE_DIR": str(DEPLOY)}
    done = _sh(
        "docker-entrypoint.sh", "sh", "-c", "exit 7", env=env | {"CV_ASSETS_INSTANCE": "ecs"}
    )
    assert done.returncode == 7  # the command ran, and its status came back
    assert (home / "dagster.yaml").read_bytes() == (DEPLOY / "dagster.ecs.yaml").read_bytes()


def test_entrypoint_refuses_an_unknown_instance_and_leaves_home_alone(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    env = {"DAGSTER_HOME": str(home), "CV_ASSETS_INSTANCE_DIR": str(DEPLOY)}
    done = _sh("docker-entrypoint.sh", "true", env=env | {"CV_ASSETS_INSTANCE": "sqlite"})
    assert done.returncode == 64
    assert "CV_ASSETS_INSTANCE=sqlite" in done.stderr
    assert not home.exists()
    untouched = _sh("docker-entrypoint.sh", "true", env=env)
    assert untouched.returncode == 0
    assert not home.exists()


def test_healthcheck_passes_without_a_role_and_rejects_an_unknown_one() -> None:
    assert _sh("healthcheck.sh", env={}).returncode == 0
    unknown = _sh("healthcheck.sh", env={"CV_ASSETS_ROLE": "scheduler"})
    assert unknown.returncode == 1
    assert "CV_ASSETS_ROLE=scheduler" in unknown.stderr


# --- Compose ----------------------------------------------------------------------------------


def compose_env() -> dict[str, str]:
    """deploy/.env.example with the required secrets filled in, as an operator would."""
    env = env_file(DEPLOY / ".env.example")
    return env | {name: f"filled-{name.lower()}" for name in env if holds_credential(name)}


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_references_only_variables_listed_in_env_example(name: str) -> None:
    text = "\n".join(strings(load_yaml(DEPLOY / name))).replace("$$", "")
    names = {m[0] for m in INTERPOLATION.findall(text)}
    names |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    listed = set(env_file(DEPLOY / ".env.example"))
    assert names, f"{name} references no variables"
    assert names <= listed, f"{name} uses {sorted(names - listed)}, not in deploy/.env.example"


def test_compose_stack_runs_the_whole_platform() -> None:
    compose = interpolate(load_yaml(DEPLOY / "docker-compose.yaml"), compose_env())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "code-server", "webserver", "daemon"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    grpc = services["code-server"]["command"]
    assert grpc[:3] == ["dagster", "code-server", "start"]
    assert grpc[grpc.index("-m") + 1] == "cv_assets.definitions"
    assert grpc[grpc.index("-p") + 1] == str(
        load_yaml(DEPLOY / "workspace.grpc.yaml")["load_from"][0]["grpc_server"]["port"]
    )
    for name in ("webserver", "daemon"):
        assert "/opt/cv_assets/workspace.grpc.yaml" in services[name]["command"]
        assert services[name]["environment"]["CV_ASSETS_CODE_SERVER_HOST"] == "code-server"
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith(
        "@postgres:5432/mlflow"
    )


def test_compose_code_server_env_switches_the_platform_to_s3_and_the_mlflow_server() -> None:
    """The platform's one switch, fed the code server's environment, lands everything on S3."""
    compose = interpolate(load_yaml(DEPLOY / "docker-compose.yaml"), compose_env())
    env = {k: str(v) for k, v in compose["services"]["code-server"]["environment"].items()}
    cfg = PlatformConfig.from_env(env)
    bucket = compose_env()["CV_ASSETS_BUCKET"]
    assert cfg.profile == "cloud"
    assert cfg.landing_root == f"s3://{bucket}/platform/landing"
    assert cfg.artifacts_root == f"s3://{bucket}/platform/artifacts"
    assert cfg.mlflow_artifact_root == f"s3://{bucket}/mlflow"
    assert cfg.mlflow_tracking_uri == "http://mlflow:5000"
    assert cfg.s3_endpoint_url == "http://minio:9000"
    assert cfg.train_defaults == {}
    # The instance variant it installs reads exactly what the service provides.
    variant = DEPLOY / f"dagster.{env['CV_ASSETS_INSTANCE']}.yaml"
    assert env_refs(load_yaml(variant)) <= set(env)


def test_compose_dagster_processes_get_what_the_instance_config_reads() -> None:
    compose = interpolate(load_yaml(DEPLOY / "docker-compose.yaml"), compose_env())
    needed = env_refs(load_yaml(DEPLOY / "dagster.postgres.yaml"))
    for name in ("webserver", "daemon", "dagster-migrate", "code-server"):
        env = compose["services"][name]["environment"]
        assert env["CV_ASSETS_INSTANCE"] == "postgres"
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"


def test_compose_refuses_to_start_without_its_secrets() -> None:
    env = env_file(DEPLOY / ".env.example")
    assert env["POSTGRES_PASSWORD"] == ""
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(load_yaml(DEPLOY / "docker-compose.yaml"), env)


def test_compose_publishes_ports_on_loopback_only() -> None:
    compose = interpolate(load_yaml(DEPLOY / "docker-compose.yaml"), compose_env())
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published
    assert all(str(p).startswith("127.0.0.1:") for p in published), published


# --- ECS --------------------------------------------------------------------------------------


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


# --- Kubernetes (Helm values for dagster/dagster, manifests) -----------------------------------


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


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_stages() -> tuple[dict[str, str], dict[str, tuple[str, list[tuple[str, str]]]]]:
    """(global ARG defaults, {stage: (base, [(INSTRUCTION, arguments)])})."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    args: dict[str, str] = {}
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            base, _, name = rest.partition(" AS ")
            current = []
            stages[name.strip()] = (base.strip(), current)
        elif current is None:
            assert op == "ARG", f"{op} before the first FROM"
            key, _, default = rest.partition("=")
            args[key] = default.strip('"')
        else:
            current.append((op, rest))
    return args, stages


def chain(stage: str) -> list[str]:
    """The stage, its base stage, and so on, down to the external image."""
    args, stages = dockerfile_stages()
    out = [stage]
    while out[-1] in stages:
        base = stages[out[-1]][0]
        out.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base))
    return out


def test_dockerfile_has_cpu_and_cuda_targets_on_the_right_bases() -> None:
    cpu, cuda = chain("cpu"), chain("cuda")
    assert cpu[-1].startswith("python:3.11."), cpu
    assert cuda[-1].startswith("nvidia/cuda:"), cuda
    cuda_base_ops = dockerfile_stages()[1][cuda[1]][1]
    assert any(op == "RUN" and "python3.11" in arg for op, arg in cuda_base_ops)


def test_dockerfile_pins_every_base_image_by_tag() -> None:
    _, stages = dockerfile_stages()
    external = {chain(name)[-1] for name in stages}
    assert len(external) == 2
    for image in external:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image} is not pinned by a tag"
        assert re.search(r"\d+\.\d+", tag), f"{image}: tag without a version"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_dockerfile_target_runs_as_a_numeric_non_root_user(target: str) -> None:
    _, stages = dockerfile_stages()
    users = [arg for op, arg in stages[target][1] if op == "USER"]
    assert users, f"{target} sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_dockerfile_target_is_offline_and_healthchecked(target: str) -> None:
    _, stages = dockerfile_stages()
    ops = stages[target][1]
    env = " ".join(arg for op, arg in ops if op == "ENV")
    assert "YOLO_OFFLINE=1" in env
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in env
    assert "CV_ASSETS_HOME=/opt/dagster" in env  # so PlatformConfig.dagster_home is DAGSTER_HOME
    assert any(op == "HEALTHCHECK" and "cv-assets-healthcheck" in arg for op, arg in ops)
    assert any(op == "ENTRYPOINT" and "cv-assets-entrypoint" in arg for op, arg in ops)


def test_dockerfile_installs_every_package_under_the_constraints() -> None:
    _, stages = dockerfile_stages()
    installs = [arg for _, ops in stages.values() for op, arg in ops if "pip install" in arg]
    assert len(installs) >= 3  # torch (CPU index), the project (CPU), the project (CUDA)
    for command in installs:
        assert "-c constraints.txt" in command, command
    text = (DEPLOY / "Dockerfile").read_text()
    assert not re.search(r"https?://\S+\.(pt|pth|onnx)\b", text), "the image downloads weights"


def test_dockerfile_copies_only_files_that_exist() -> None:
    _, stages = dockerfile_stages()
    for _, ops in stages.values():
        for op, arg in ops:
            if op != "COPY" or "--from=" in arg:
                continue
            sources = [a for a in arg.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such file"


# --- No literal secrets anywhere in deploy/ ---------------------------------------------------


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name != ".env")


def test_no_deploy_file_contains_a_literal_secret() -> None:
    offenders = []
    for path in deploy_files():
        text = path.read_text()
        if re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
            offenders.append(f"{path.name}: key material")
        # user:password@ in a URI must be an interpolation or a <placeholder>, never a value
        # (comments aside, where the shape is explained).
        code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(("#", "--")))
        for match in re.finditer(r"://[^/\s:@'\"`]+:([^@\s'\"`]+)@", code):
            if not match.group(1).startswith(("${", "<")):
                offenders.append(f"{path.name}: password in a URI")
        if path.suffix in (".yaml", ".yml", ".json"):
            docs = list(yaml.safe_load_all(text)) if path.suffix != ".json" else [json.loads(text)]
            for doc in docs:
                for where, key, value in walk(doc):
                    if not (isinstance(key, str) and holds_credential(key)):
                        continue
                    if isinstance(value, str) and value and not value.startswith("${"):
                        offenders.append(f"{path.name}: {where} = {value!r}")
        if path.name.endswith(".env.example"):
            for key, value in env_file(path).items():
                if holds_credential(key) and value:
                    offenders.append(f"{path.name}: {key} has a value")
    assert not offenders, offenders
