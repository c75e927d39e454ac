"""The compose stack (deploy/docker-compose*.yaml, .env.example): its variables, its services,
and the environment it gives the code server, fed through the platform's own switch."""

from __future__ import annotations

import re

import pytest

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets_tests.deploy.configs import (
    DEPLOY,
    INTERPOLATION,
    env_file,
    env_refs,
    holds_credential,
    interpolate,
    load_yaml,
    strings,
)

pytestmark = pytest.mark.unit

COMPOSE_FILES = ["docker-compose.yaml", "docker-compose.gpu.yaml"]


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
