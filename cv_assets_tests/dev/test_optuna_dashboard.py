"""``make optuna-dashboard``: optuna-dashboard on 127.0.0.1 over the home's hyperparameter studies
(``optuna.db`` beside ``mlflow.db``), where the training worker keeps them."""

import json
import os
import shlex
import subprocess
import time
import urllib.request

import optuna
import pytest

from cv_assets.dev.procs import stop_group
from cv_assets.lib.training.studies import STORAGE_VAR, open_study_storage, study_storage
from cv_assets_tests.support.processes import REPO, free_port, group_gone

pytestmark = pytest.mark.unit


def _get(url: str, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_make_optuna_dashboard_serves_the_homes_studies_on_loopback(cfg):
    # A study where hpo_sweep keeps it for this home.
    storage = open_study_storage(study_storage(cfg.mlflow_tracking_uri, {}), heartbeat=False)
    optuna.create_study(study_name="cv_assets-sweep", storage=storage).optimize(
        lambda t: t.suggest_float("lr0", 1e-3, 1e-2, log=True), n_trials=2
    )
    assert (cfg.home / "optuna.db").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (STORAGE_VAR, "MLFLOW_TRACKING_URI")}
    # What make runs for the target (its install prerequisite aside), as make runs it.
    plan = subprocess.run(
        ["make", "-n", "optuna-dashboard", f"OPTUNA_PORT={port}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (line,) = [x for x in plan.splitlines() if "cv_assets.dev.optuna_dashboard" in x]
    proc = subprocess.Popen(
        shlex.split(line), cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        page = _get(f"http://127.0.0.1:{port}/dashboard", timeout_s=60)
        assert b"<html" in page.lower()
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies", timeout_s=10))
        assert [s["study_name"] for s in studies["study_summaries"]] == ["cv_assets-sweep"]
    finally:
        stop_group(proc, grace_s=10)
    assert group_gone(proc.pid)
    out = proc.stdout.read() if proc.stdout else ""
    assert f"http://127.0.0.1:{port}/dashboard" in out and "optuna.db" in out
