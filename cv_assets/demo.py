"""``make demo``: land synthetic batches and let the real daemon take them through intake.

Nothing here calls an asset function: batches are written to the landing zone, ``dagster dev``
(webserver + daemon) runs in the background, ``landing_sensor`` notices the batches and the run
queue materialises them. The demo waits on the instance's event log, then prints the status.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cv_assets.home import REPO, prepare_home
from cv_assets.lib.settings import PlatformConfig

TIMEOUT_S = int(os.environ.get("DEMO_TIMEOUT_S", "900"))


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cv_assets.cli", *args], env=env, check=True)


def _validated(cfg: PlatformConfig) -> set[str]:
    from cv_assets.status import latest_by_partition, open_instance

    instance = open_instance(cfg)
    try:
        return set(latest_by_partition(instance, "validated_batch"))
    finally:
        instance.dispose()


def main() -> int:
    cfg = PlatformConfig.from_env()
    env = prepare_home(cfg)
    env.setdefault("CV_ASSETS_SENSOR_INTERVAL", "5")
    port = env.get("UI_PORT", "3000")
    seed = int(time.time()) % 100_000  # each demo run lands new, different batches
    print(f"== cv_assets demo in {cfg.home}")
    before = {p.name for p in Path(cfg.landing_root).iterdir()} if cfg.profile == "local" else set()
    _cli(env, "synth", "--batches", "2", "--images-per-batch", "48", "--seed", str(seed))
    _cli(
        env,
        "synth",
        "--batches",
        "1",
        "--images-per-batch",
        "48",
        "--seed",
        str(seed + 1),
        "--corrupt-fraction",
        "0.35",
        "--quirk-fraction",
        "0.1",
    )
    landed = {p.name for p in Path(cfg.landing_root).iterdir() if (p / "batch.json").exists()}
    new = landed - before
    print(f"== landed {len(new)} batches: {', '.join(sorted(new))}")

    log = open(cfg.home / "dagster-dev.log", "ab")  # noqa: SIM115 - lives as long as the server
    print(f"== starting dagster dev on http://127.0.0.1:{port} (log: {log.name})")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        t0 = time.monotonic()
        done: set[str] = set()
        while time.monotonic() - t0 < TIMEOUT_S:
            if proc.poll() is not None:
                print("dagster dev exited early; see the log above", file=sys.stderr)
                return 1
            done = _validated(cfg) & new
            if done == new:
                break
            time.sleep(3)
        print(f"== intake done for {len(done)}/{len(new)} batches in {time.monotonic() - t0:.0f}s")
        _cli(env, "status")
        return 0 if done == new else 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(f"== stopped dagster dev. Browse it again with: make ui  (http://127.0.0.1:{port})")


if __name__ == "__main__":
    sys.exit(main())
