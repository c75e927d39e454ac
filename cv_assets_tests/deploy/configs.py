"""Reading deploy/'s files as the tools that consume them would: YAML, env files, interpolation.

The tests in this folder check everything in deploy/ that can be checked without a container
engine, a cluster or AWS. Each Dagster instance variant goes through Dagster's own dagster.yaml
validation, and its configurable classes (dagster-postgres, dagster-aws) through their own schemas
and constructors; the ECS task definitions through botocore's model of the RegisterTaskDefinition
request; the compose stack through the platform's own switch (PlatformConfig.from_env); the Helm
values, the Kubernetes manifests and the Dockerfile structurally. What these tests cannot prove is
listed in deploy/README.md ("What was validated, and what was not").
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

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


def image_file(path: str) -> Path:
    """The repository file that deploy/Dockerfile copies to ``path`` in the image."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    for line in text.splitlines():
        op, *args = line.split() or [""]
        if op != "COPY" or any(a.startswith("--from=") for a in args):
            continue
        *sources, dest = [a for a in args if not a.startswith("--")]
        for source in sources:
            if (dest + Path(source).name if dest.endswith("/") else dest) == path:
                return REPO / source
    raise AssertionError(f"the image holds nothing at {path}")


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
