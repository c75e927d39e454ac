"""The container image: deploy/Dockerfile's stages, read structurally, and the entrypoint and
healthcheck scripts it installs, run with sh."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from cv_assets_tests.deploy.configs import DEPLOY, REPO

pytestmark = pytest.mark.unit


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
    # The phones' converters: their own environment, built in its own stage, named to the platform.
    assert "CV_ASSETS_EXPORT_PYTHON=/opt/venv-export/bin/python" in env
    assert ("COPY", "--from=builder-export /opt/venv-export /opt/venv-export") in ops
    assert any(op == "HEALTHCHECK" and "cv-assets-healthcheck" in arg for op, arg in ops)
    assert any(op == "ENTRYPOINT" and "cv-assets-entrypoint" in arg for op, arg in ops)


def test_dockerfile_installs_every_package_under_the_constraints() -> None:
    _, stages = dockerfile_stages()
    installs = [arg for _, ops in stages.values() for op, arg in ops if "pip install" in arg]
    # torch (CPU index), the project (CPU), the project (CUDA), the export environment
    assert len(installs) >= 4
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
