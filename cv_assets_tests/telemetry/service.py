"""Helpers for the telemetry tests and benchmark: realistic events, the registry files the platform
writes, and the real service in a child process on a free loopback port."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import requests

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.spool import EVENTS_PREFIX
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import CHAMPION_KEY, HISTORY_KEY, ModelVersion
from cv_assets.read_side import open_store
from cv_assets_tests.support.processes import REPO, free_port

TOKEN = "test-token-5f1c2a9e"
SHA = "3b" * 32


def make_event(rng: random.Random | None = None, **over: Any) -> dict[str, Any]:
    """An event as an app sends it: model ``2``, a 1280x720 frame, 0..5 detections."""
    rng = rng or random.Random()
    dets = []
    for _ in range(rng.randint(0, 5)):
        x1, y1 = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
        box = [x1, y1, x1 + rng.uniform(0.05, 0.3), y1 + rng.uniform(0.05, 0.3)]
        dets.append({"class_id": rng.randrange(3), "confidence": rng.random(), "box": box})
    event = {
        "event_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        "time": f"2026-12-0{rng.randint(1, 2)}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
        "install_id": f"inst-{rng.randrange(10**6):06d}",
        "app_version": "2.14.1",
        "os": rng.choice(["android", "ios"]),
        "os_version": "14",
        "device_model": rng.choice(["Pixel 8", "iPhone15,2", "SM-S911B"]),
        "runtime": rng.choice(["onnxruntime", "litert", "coreml"]),
        "delegate": rng.choice(["cpu", "gpu", "nnapi", "ane"]),
        "model_version": "2",
        "model_sha256": SHA,
        "input": {
            "width": 1280,
            "height": 720,
            "brightness": rng.uniform(40, 200),
            "contrast": rng.uniform(10, 70),
            "sharpness": rng.uniform(50, 900),
        },
        "detections": dets,
        "latency_ms": rng.uniform(5, 60),
        "sampling": "random",
        "consent_image": False,
    }
    return event | over


def jpeg_b64(size: int = 200) -> str:
    """A real JPEG of ``size`` x ``size`` pixels, base64."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (90, 140, 200)).save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def register_models(
    cfg: PlatformConfig, champion: str = "2", earlier: tuple[str, ...] = ("1",)
) -> None:
    """The registry's files as ``Registry.promote`` writes them: every version promoted in
    turn in ``history.json``, the last one in ``champion.json`` (three classes)."""
    store = open_store(cfg)
    history, previous = [], None
    for v in (*earlier, champion):
        history.append(
            {"at": "2026-11-30T09:00:00+00:00", "action": "promote", "version": v,
             "previous": previous, "who": "gate", "why": "beats the champion",
             "metrics_before": None, "metrics_after": {"map50": 0.9, "map50_95": 0.7}}
        )  # fmt: skip
        previous = v
    store.put_bytes(HISTORY_KEY, json.dumps(history, indent=1).encode())
    mv = ModelVersion(
        version=champion, status="champion", weights_uri="", weights_sha256=SHA,
        dataset_version="d1", mlflow_run_id="", map50=0.9, map50_95=0.7, imgsz=320,
        class_names=list(cfg.classes), created_at="2026-11-30T09:00:00+00:00", mobile={},
    )  # fmt: skip
    pointer = mv.as_dict() | {"model_name": tracking.MODEL_NAME}
    store.put_bytes(CHAMPION_KEY, json.dumps(pointer, indent=1).encode())


def parquet_rows(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every row of every telemetry Parquet part in ``store``."""
    rows = []
    for key in sorted(store.list(EVENTS_PREFIX)):
        rows += pq.read_table(io.BytesIO(store.get_bytes(key))).to_pylist()
    return rows


class TelemetryServer:
    """``python -m cv_assets.telemetry`` on a free 127.0.0.1 port, with ``cfg``'s home."""

    def __init__(self, cfg: PlatformConfig, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.env = (
            dict(os.environ)
            | {
                "CV_ASSETS_HOME": str(cfg.home),
                "CV_ASSETS_TELEMETRY_TOKEN": TOKEN,
                "CV_ASSETS_TELEMETRY_PORT": str(self.port),
                "CV_ASSETS_TELEMETRY_FLUSH_S": "0.5",
            }
            | env
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> TelemetryServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cv_assets.telemetry"],
            cwd=REPO,
            env=self.env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.tail()
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"the telemetry service did not start\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def rss_peak_kib(self) -> int:
        """The process's peak resident memory (VmHWM), in KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    def post(self, body: Any, token: str | None = TOKEN, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(f"{self.url}/v1/events", data=data, headers=headers, timeout=60, **kw)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]
