"""No literal secret anywhere in deploy/: key material, passwords in URIs, credential values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cv_assets_tests.deploy.configs import DEPLOY, env_file, holds_credential, walk

pytestmark = pytest.mark.unit


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
