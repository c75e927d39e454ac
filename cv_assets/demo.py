"""``make demo``: land synthetic batches and let the real Dagster daemon take them all the way.

Nothing here calls an asset function. Batches are written to the landing zone; ``dagster dev``
(webserver + daemon) runs in the background; ``landing_sensor`` notices the batches and the run
queue materialises intake. The demo then asks the webserver (its GraphQL API, as the UI's
"Materialize" button does) for ``training_job``: dataset snapshot, training, evaluation against
the champion, the gate and the registry. It waits on the instance's event log and prints status.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cv_assets.home import REPO, prepare_home
from cv_assets.lib.settings import PlatformConfig

TIMEOUT_S = int(os.environ.get("DEMO_TIMEOUT_S", "1800"))
# Sized to train within ~10 CPU-minutes on 2 cores; the README explains the choice.
BATCHES, IMAGES, SIZE = 5, 128, 320
TRAIN = {
    "epochs": int(os.environ.get("DEMO_EPOCHS", "21")),
    "imgsz": 224,
    "batch": 16,
    "lr0": 0.003,
    "mosaic": 0.0,
    "scale": 0.25,
    "warmup_epochs": 1.0,
}


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cv_assets.cli", *args], env=env, check=True)


def _validated(cfg: PlatformConfig) -> set[str]:
    from cv_assets.status import latest_by_partition, open_instance

    instance = open_instance(cfg)
    try:
        return set(latest_by_partition(instance, "validated_batch"))
    finally:
        instance.dispose()


def _wait(what: str, done, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print("dagster dev exited early; see its log", file=sys.stderr)
            return False
        if done():
            return True
        time.sleep(3)
    print(f"timed out waiting for {what}", file=sys.stderr)
    return False


def _run_status(cfg: PlatformConfig, run_id: str) -> str:
    from cv_assets.status import open_instance

    instance = open_instance(cfg)
    try:
        run = instance.get_run_by_id(run_id)
        return run.status.value if run else "UNKNOWN"
    finally:
        instance.dispose()


def main() -> int:
    cfg = PlatformConfig.from_env()
    env = prepare_home(cfg)
    env.setdefault("CV_ASSETS_SENSOR_INTERVAL", "5")
    port = env.get("UI_PORT", "3000")
    seed = int(time.time()) % 100_000  # each demo run lands new, different batches
    print(f"== cv_assets demo in {cfg.home}")
    landing = Path(cfg.landing_root)
    before = {p.name for p in landing.iterdir()}
    _cli(
        env,
        "synth",
        "--batches",
        str(BATCHES - 1),
        "--images-per-batch",
        str(IMAGES),
        "--seed",
        str(seed),
        "--size",
        str(SIZE),
    )
    _cli(
        env,
        "synth",
        "--batches",
        "1",
        "--images-per-batch",
        str(IMAGES),
        "--seed",
        str(seed + 1),
        "--size",
        str(SIZE),
        "--corrupt-fraction",
        "0.2",
        "--quirk-fraction",
        "0.1",
    )
    new = {p.name for p in landing.iterdir() if (p / "batch.json").exists()} - before
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
    deadline = time.monotonic() + TIMEOUT_S
    try:
        t0 = time.monotonic()
        if not _wait("intake", lambda: new <= _validated(cfg), proc, deadline):
            return 1
        print(f"== intake of {len(new)} batches done by the sensor in {time.monotonic() - t0:.0f}s")
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=int(port))
        run_config = {"ops": {"yolo_model": {"config": TRAIN}}}
        run_id = client.submit_job_execution("training_job", run_config=run_config)
        print(
            f"== training_job submitted (run {run_id[:8]}, {TRAIN}); "
            f"follow it at http://127.0.0.1:{port}/runs/{run_id}"
        )
        t1 = time.monotonic()
        terminal = {"SUCCESS", "FAILURE", "CANCELED"}
        if not _wait("training", lambda: _run_status(cfg, run_id) in terminal, proc, deadline):
            return 1
        status = _run_status(cfg, run_id)
        print(f"== training_job {status} in {time.monotonic() - t1:.0f}s")
        _cli(env, "status")
        if status == "SUCCESS":
            image = next(iter(sorted((landing / sorted(new)[0] / "images").glob("*.jpg"))))
            print(f"\n== cv-assets predict --model champion {image.name}")
            _cli(env, "predict", "--model", "champion", str(image))
        print(
            f"\nDagster UI: make ui -> http://127.0.0.1:{port}   "
            f"MLflow UI: make mlflow-ui -> http://127.0.0.1:5000"
        )
        return 0 if status == "SUCCESS" else 1
    finally:
        if proc.poll() is None:
            # dagster dev shuts down on SIGINT (its Ctrl-C path); it ignores SIGTERM.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        print("== stopped dagster dev")


if __name__ == "__main__":
    sys.exit(main())
