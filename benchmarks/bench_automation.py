"""Automation benchmarks (issue 5), measured from the instance's event log under the real daemon.

One ``dagster dev`` session on a fresh home: batch A lands (below N), then batch B, whose intake
crosses N. From the event log:

- ``volume_trigger_ticks``: from B's ``validated_batch`` materialization to the creation of the
  training run, in ticks of the automation sensor (goal <= 1 tick);
- ``landing_to_champion_overhead``: from B's ``batch.json`` landing to the new champion's
  materialization, minus the ``yolo_model`` step (the training itself); goal <= 60 s. What is left
  is the platform: sensor ticks, run launches, intake, the dataset snapshot, evaluation, the mobile
  conversion with its parity proof, and the registry.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.common import QUICK, WORK, Result
from cv_assets.dev.procs import stop_group

REPO = Path(__file__).resolve().parents[1]
TICK_S = 5
IMAGES = 24 if QUICK else 48
TRAIN = {"epochs": 2 if QUICK else 5, "imgsz": 96, "batch": 16, "min_train_images": 8}


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ) | {
        "CV_ASSETS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "CV_ASSETS_TRAIN": json.dumps(TRAIN),
        "CV_ASSETS_GATE": json.dumps({"min_map50": 0.0}),
        "CV_ASSETS_RETRAIN_MIN_IMAGES": str(IMAGES + IMAGES // 2),
        "CV_ASSETS_RETRAIN_COOLDOWN_S": "0",
        "CV_ASSETS_SENSOR_INTERVAL": str(TICK_S),
    }


def _synth(env: dict[str, str], seed: int) -> Path:
    home = Path(env["CV_ASSETS_HOME"])
    before = set((home / "landing").iterdir()) if (home / "landing").exists() else set()
    args = ["synth", "--batches", "1", "--images-per-batch", str(IMAGES), "--seed", str(seed)]
    subprocess.run([sys.executable, "-m", "cv_assets.cli", *args], env=env, check=True)
    (new,) = set((home / "landing").iterdir()) - before
    return new


def _wait(done, proc: subprocess.Popen, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("dagster dev exited early")
        if value := done():
            return value
        time.sleep(0.5)
    raise TimeoutError("benchmark session timed out")


@cache
def session() -> dict[str, float]:
    import dagster as dg

    home = WORK / "automation"
    shutil.rmtree(home, ignore_errors=True)
    env = _env(home)
    from cv_assets.dev.home import prepare_home
    from cv_assets.lib.core.settings import PlatformConfig

    prepare_home(PlatformConfig.from_env(env))
    first = _synth(env, 1).name
    cmd = ["dev", "-h", "127.0.0.1", "-p", "0", "-w", str(REPO / "workspace.yaml")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", *cmd],
        env=env,
        cwd=REPO,
        stdout=open(home / "dagster-dev.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))

    def materialized(asset: str, partition: str | None = None):
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None
            ),
            limit=1,
        ).records
        return recs[0] if recs else None

    try:
        _wait(lambda: materialized("validated_batch", first), proc, 600)
        time.sleep(2 * TICK_S)  # A alone is below N: no training
        assert not instance.get_runs(dg.RunsFilter(tags={"cv_assets/stage": "training"}))
        batch = _synth(env, 2)
        landed = (batch / "batch.json").stat().st_mtime
        crossed = _wait(lambda: materialized("validated_batch", batch.name), proc, 600)
        flt = dg.RunsFilter(tags={"cv_assets/stage": "training"})
        run = _wait(lambda: instance.get_run_records(flt, limit=1), proc, 600)[0]
        champ = _wait(lambda: materialized("champion_model"), proc, 1800)
        steps = {
            e.step_key: e.timestamp
            for e in instance.all_logs(run.dagster_run.run_id)
            if e.step_key == "yolo_model" and e.dagster_event and e.dagster_event.is_step_start
        }
        ends = [
            e.timestamp
            for e in instance.all_logs(run.dagster_run.run_id)
            if e.step_key == "yolo_model" and e.dagster_event and e.dagster_event.is_step_success
        ]
        return {
            "trigger_s": run.create_timestamp.timestamp() - crossed.timestamp,
            "landing_to_champion_s": champ.timestamp - landed,
            "train_step_s": ends[0] - steps["yolo_model"],
        }
    finally:
        stop_group(proc, signal.SIGINT, grace_s=60)
        instance.dispose()


def volume_trigger_ticks() -> Result:
    s = session()
    ticks = s["trigger_s"] / TICK_S
    return Result(
        name="volume_trigger_ticks",
        issue=5,
        measured="validated_batch crossing N -> training run created, in automation-sensor "
        f"ticks ({TICK_S} s), from the event log under dagster dev",
        value=round(ticks, 2),
        unit="ticks",
        goal="<= 1 tick",
        passed=ticks <= 1.0,
        details=f"{s['trigger_s']:.1f} s",
    )


def landing_to_champion_overhead() -> Result:
    s = session()
    overhead = s["landing_to_champion_s"] - s["train_step_s"]
    return Result(
        name="landing_to_champion_overhead",
        issue=5,
        measured="batch.json landed -> new champion, minus the yolo_model step, under dagster dev "
        f"({IMAGES}+{IMAGES} images, {TRAIN['epochs']} epochs at {TRAIN['imgsz']} px)",
        value=round(overhead, 1),
        unit="s",
        goal="<= 60 s",
        passed=overhead <= 60,
        details=f"{s['landing_to_champion_s']:.0f} s in all, training step "
        f"{s['train_step_s']:.0f} s",
    )


BENCHMARKS = [volume_trigger_ticks, landing_to_champion_overhead]
