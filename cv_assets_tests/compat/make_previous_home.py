"""Makes the home of a previous release, for ``test_previous_home.py``: run it when a release
changes what an instance stores, and commit the archive it writes.

    .venv/bin/python -m cv_assets_tests.compat.make_previous_home <git-rev>

It checks ``<git-rev>`` out into a temporary worktree and runs *that* code, with this checkout's
virtualenv, under its own ``dagster dev`` (webserver and daemon): two landed batches, the real
``landing_sensor`` ticking and two intake runs. The home (instance, landing zone, artifacts) is then
archived without its logs, as ``home-<rev>.tar.gz`` beside this file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BATCHES, IMAGES = 2, 6


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout


def _succeeded_intakes(home: Path) -> int:
    db = home / "dagster_home" / "history" / "runs.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT status, pipeline_name FROM runs").fetchall()
    return sum(1 for status, job in rows if job == "intake_job" and status == "SUCCESS")


def main(rev: str) -> Path:
    sha = _git("rev-parse", "--short=7", rev).strip()
    out = HERE / f"home-{sha}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="cv_prev_") as tmp:
        tree, home = Path(tmp) / "tree", Path(tmp) / "home"
        _git("worktree", "add", "--detach", str(tree), sha)
        try:
            env = dict(os.environ) | {
                "PYTHONPATH": str(tree),
                "CV_ASSETS_HOME": str(home),
                "DAGSTER_HOME": str(home / "dagster_home"),
                "CV_ASSETS_SENSOR_INTERVAL": "5",
                "YOLO_OFFLINE": "1",
            }
            py = [sys.executable]
            prep = "from cv_assets.home import prepare_home; from cv_assets.lib.settings import "
            prep += "PlatformConfig; prepare_home(PlatformConfig.from_env())"
            subprocess.run([*py, "-c", prep], cwd=tree, env=env, check=True)
            synth = ["synth", "--batches", str(BATCHES), "--images-per-batch", str(IMAGES)]
            synth += ["--size", "64", "--seed", "5"]
            subprocess.run([*py, "-m", "cv_assets.cli", *synth], cwd=tree, env=env, check=True)
            log = open(Path(tmp) / "dev.log", "wb")  # noqa: SIM115 - closed below
            dev = ["dev", "-h", "127.0.0.1", "-p", "0", "-w", str(tree / "workspace.yaml")]
            proc = subprocess.Popen(
                [*py, "-m", "dagster", *dev], cwd=tree, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 600
                while _succeeded_intakes(home) < BATCHES:
                    assert proc.poll() is None and time.monotonic() < deadline, (
                        Path(tmp) / "dev.log"
                    ).read_text()[-3000:]
                    time.sleep(3)
                time.sleep(12)  # two more sensor ticks with nothing new, as a running home has
            finally:
                # Ctrl-C, as a person stops `dagster dev`; then the group, whatever is left.
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
                log.close()
        finally:
            _git("worktree", "remove", "--force", str(tree))
        (home / "made_by.json").write_text(json.dumps({"rev": sha, "batches": BATCHES}))
        skip = {"logs", "compute_logs", ".logs_queue", ".telemetry", "mlruns"}
        with tarfile.open(out, "w:gz") as tar:
            tar.add(
                home, arcname="home", filter=lambda ti: None if Path(ti.name).name in skip else ti
            )
    return out


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "HEAD"))
