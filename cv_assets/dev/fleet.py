"""The demo's field: yesterday's traffic of a simulated fleet through the real telemetry service,
and a simulated person who labels the audit frames.

The fleet runs the champion's own ONNX file on 320 px synthetic frames. The installs of one
device model (Moto G54) see darker frames; one app build posts malformed events, which the
service refuses with a reason each. The service is ``python -m cv_assets.telemetry`` on a free
127.0.0.1 port, with a token made for the run; it flushes what it stored when it stops. From
there the daemon does the rest: ``field_day_sensor`` runs ``field_drift`` and ``field_samples``
for yesterday, the low-confidence frames land as a batch and enter the unlabelled pool.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from cv_assets.client.telemetry_client import TelemetryClient
from cv_assets.dev.home import REPO
from cv_assets.dev.procs import stop_group
from cv_assets.lib.core.files import local_file
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.scenes import Shift
from cv_assets.lib.telemetry.fleet import FleetCohort, malformed_events, simulate_day
from cv_assets.lib.tracking.registry import read_champion
from cv_assets.read_side import open_store

SHIFTED = FleetCohort("Moto G54", Shift(brightness=-0.3))
# 8 cohorts (4 device classes x 2 app versions) of ~250 events: each above field_drift's 200.
INSTALLS, EVENTS_PER_INSTALL, MALFORMED = 200, 10, 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FleetDay:
    day: str
    model_version: str
    sent: int = 0
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)
    truth: dict[str, str] = field(default_factory=dict)  # sent frame -> its true boxes


def make_day(
    cfg: PlatformConfig, seed: int, day: str, installs: int = INSTALLS
) -> tuple[FleetDay, list[dict], list[dict]]:
    """The fleet's events of ``day`` running the champion's ONNX file, and the faulty build's."""
    store = open_store(cfg)
    champ = read_champion(store)
    if champ is None or not champ.get("mobile", {}).get("onnx_uri"):
        raise RuntimeError("no champion with an ONNX file: the fleet has nothing to run")
    onnx = local_file(store, str(champ["mobile"]["onnx_uri"]), cfg.home / "cache")
    out = FleetDay(day, str(champ["version"]))
    events = simulate_day(
        str(onnx), out.model_version, str(champ["weights_sha256"]), day, installs=installs,
        events_per_install=EVENTS_PER_INSTALL, seed=seed, cohorts=[SHIFTED], frame_size=320,
        random_share=0.1, workers=2, truth=out.truth,
    )  # fmt: skip
    bad = malformed_events(MALFORMED, seed=seed, model_version=out.model_version)
    for e in bad:  # the faulty build's events are of the same day
        e["time"] = day + e["time"][10:]
    return out, events, bad


def post_day(out: FleetDay, url: str, token: str, events: list[dict], bad: list[dict]) -> None:
    """Posts the good events with the reference client, then the faulty build's batch as that app
    wrote it: its NaN box is not valid JSON, which the reference client refuses to send, and the
    service judges it per event."""
    client = TelemetryClient(url, token)
    try:
        answer = client.send(events)
    finally:
        client.close()
    body = json.dumps({"schema_version": 1, "events": bad})
    r = requests.post(f"{url.rstrip('/')}/v1/events", data=body, timeout=60,
                      headers={"Authorization": f"Bearer {token}",
                               "Content-Type": "application/json"})  # fmt: skip
    r.raise_for_status()
    faulty = r.json()
    out.sent = len(events) + len(bad)
    out.accepted = answer["accepted"] + faulty["accepted"]
    out.rejected = answer["rejected"] + faulty["rejected"]


def yesterday() -> str:
    return (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")


def send_day(cfg: PlatformConfig, env: dict[str, str], seed: int) -> FleetDay:
    """Yesterday (UTC) of the fleet, posted to a telemetry service started for it."""
    out, events, bad = make_day(cfg, seed, yesterday())
    port, token = _free_port(), secrets.token_urlsafe(24)
    service_env = {"CV_ASSETS_TELEMETRY_TOKEN": token, "CV_ASSETS_TELEMETRY_PORT": str(port),
                   "CV_ASSETS_TELEMETRY_FLUSH_S": "2"}  # fmt: skip
    log = open(cfg.home / "telemetry-demo.log", "ab")  # noqa: SIM115 - lives as long as the service
    proc = subprocess.Popen(
        [sys.executable, "-m", "cv_assets.telemetry"],
        cwd=REPO,
        env=env | service_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc)
        post_day(out, url, token, events, bad)
    finally:
        stop_group(proc, signal.SIGTERM)  # the service flushes its spool on the way out
    return out


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the telemetry service exited at start: see telemetry-demo.log")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"the telemetry service did not answer on {url}")


def label_audit(cfg: PlatformConfig, env: dict[str, str], truth: dict[str, str]) -> list[str]:
    """What a person does with the audit set: export it, label each frame, import the labels.

    The simulated person draws each frame's true boxes (the fleet kept them).
    """
    folder = cfg.home / "audit-demo"
    cli = [sys.executable, "-m", "cv_assets.cli", "audit"]
    subprocess.run([*cli, "export", "--out", str(folder)], env=env, check=True)
    (folder / "labels").mkdir(exist_ok=True)
    for img in sorted((folder / "images").glob("*.jpg")):
        (folder / "labels" / f"{img.stem}.txt").write_text(truth[img.stem])
    subprocess.run([*cli, "import", str(folder)], env=env, check=True)
    return sorted(p.stem for p in (folder / "labels").glob("*.txt"))


def rejected_summary(rejected: list[dict]) -> str:
    """``n x reason`` per distinct reason (the event ids say which fault each had)."""
    counts: dict[str, int] = {}
    for r in rejected:
        why = re.sub(r"^events\[\d+\]\.", "", r["reason"])  # the event's place in its batch
        counts[why] = counts.get(why, 0) + 1
    return "; ".join(f"{n} x {why}" for why, n in sorted(counts.items()))


def frame_count(path: Path) -> int:
    return sum(1 for _ in (path / "images").glob("*")) if (path / "images").is_dir() else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cv_assets.dev.fleet``: a day of the simulated fleet, posted to a running
    telemetry service (``make ui`` or ``make telemetry``) with the home's token."""
    import argparse
    import os
    import time

    from cv_assets.dev.telemetry import service_token

    p = argparse.ArgumentParser(prog="python -m cv_assets.dev.fleet", description=main.__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8090", help="the telemetry service")
    p.add_argument("--day", default=yesterday(), help="YYYY-MM-DD (default: yesterday, UTC)")
    p.add_argument("--installs", type=int, default=INSTALLS, help="installs, 10 events each")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    args = p.parse_args(argv)
    cfg = PlatformConfig.from_env()
    token, _ = service_token(cfg.home, os.environ)
    out, events, bad = make_day(cfg, args.seed, args.day, args.installs)
    post_day(out, args.url, token, events, bad)
    print(f"{out.sent} events of {out.day} from {args.installs} installs running "
          f"v{out.model_version} (the Moto installs' frames darker): {out.accepted} accepted, "
          f"{len(out.rejected)} rejected ({rejected_summary(out.rejected)})")  # fmt: skip
    print("field_day_sensor judges the day once it has been over CV_ASSETS_FIELD_SETTLE_S")
    return 0


if __name__ == "__main__":
    sys.exit(main())
