"""A real Label Studio server on 127.0.0.1 (from ``.venv-labelstudio``), for the tests."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cv_assets.dev.labelstudio import DEFAULT_BIN, command, environment
from cv_assets.dev.procs import stop_group
from cv_assets_tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class LabelStudioServer:
    url: str
    token: str
    files_root: Path
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop_group(self.proc, grace_s=10)


def binary() -> Path:
    return Path(os.environ.get("CV_ASSETS_LABELSTUDIO_BIN", REPO / DEFAULT_BIN))


def start_labelstudio(root: Path, timeout_s: float = 180.0) -> LabelStudioServer:
    """Start Label Studio with its data and document root under ``root``; wait for /health."""
    port, token = free_port(), secrets.token_hex(20)
    files, data, log = root / "files", root / "data", root / "labelstudio.log"
    files.mkdir(parents=True, exist_ok=True)
    cmd = command(binary(), port, data, token, secrets.token_hex(8))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=environment(data, files, os.environ), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"Label Studio exited ({proc.returncode}): {log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return LabelStudioServer(url, token, files, proc, log)
        except OSError:
            time.sleep(1)
    stop_group(proc)
    raise RuntimeError(f"Label Studio did not answer in {timeout_s}s: {log.read_text()[-3000:]}")


class Person:
    """Label Studio's web page, as a person drives it: over the same HTTP API."""

    def __init__(self, server: LabelStudioServer) -> None:
        self.url, self.h = server.url, {"Authorization": f"Token {server.token}"}

    def tasks(self, project: int) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/projects/{project}/export?exportType=JSON"
                         "&download_all_tasks=true", headers=self.h, timeout=30)  # fmt: skip
        r.raise_for_status()
        return sorted(r.json(), key=lambda t: t["id"])

    def task(self, task_id: int) -> dict[str, Any]:
        r = requests.get(f"{self.url}/api/tasks/{task_id}", headers=self.h, timeout=30)
        r.raise_for_status()
        return r.json()

    def annotate(self, task: dict[str, Any], result: list[dict[str, Any]], **kw: Any) -> int:
        r = requests.post(f"{self.url}/api/tasks/{task['id']}/annotations", headers=self.h,
                          json={"result": result} | kw, timeout=30)  # fmt: skip
        r.raise_for_status()
        return int(r.json()["id"])

    def edit(self, annotation: int, result: list[dict[str, Any]]) -> None:
        r = requests.patch(f"{self.url}/api/annotations/{annotation}", headers=self.h,
                           json={"result": result}, timeout=30)  # fmt: skip
        r.raise_for_status()

    def delete_task(self, task: dict[str, Any]) -> None:
        requests.delete(f"{self.url}/api/tasks/{task['id']}", headers=self.h, timeout=30)


def rect(label: str, x: float, y: float, w: float, h: float, size: int = 96) -> dict[str, Any]:
    return {
        "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": size, "original_height": size, "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                  "rectanglelabels": [label]},
    }  # fmt: skip
