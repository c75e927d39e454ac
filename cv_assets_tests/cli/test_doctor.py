"""``cv-assets doctor`` with the tracking server down or behind a password: a FAIL line within
seconds, the other checks still run, and the password never reaches the screen."""

import os
import socket
import time

import pytest

from cv_assets.cli.doctor import check_export_env
from cv_assets_tests.support.processes import cli

pytestmark = pytest.mark.unit


def test_doctor_with_mlflow_down_fails_that_check_in_seconds_and_runs_the_others(cfg):
    env = dict(os.environ) | {
        "YOLO_OFFLINE": "1",
        "MLFLOW_TRACKING_URI": "http://user:s3cret@127.0.0.1:9",  # nothing listens on port 9
    }
    t0 = time.perf_counter()
    out = cli("doctor", env=env)
    took = time.perf_counter() - t0
    assert took < 15, f"doctor took {took:.1f} s with MLflow down"
    assert out.returncode == 1, out.stdout + out.stderr
    assert (
        "FAIL  MLflow tracking: MLflow tracking at http://user:***@127.0.0.1:9 is unreachable: "
        "nothing accepted a connection at 127.0.0.1:9" in out.stdout
    )
    # The checks before and after it still ran and passed.
    assert "PASS  dagster: 1.13.27" in out.stdout and "PASS  artifact store" in out.stdout
    assert "PASS  Dagster home" in out.stdout and "1 check(s) failed" in out.stdout
    assert "s3cret" not in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_doctor_shows_a_listening_server_with_its_password_masked(cfg):
    with socket.socket() as server:  # a real listener: the probe is a TCP connect
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        uri = f"postgresql://mlflow:s3cret@127.0.0.1:{port}/mlflow"
        env = dict(os.environ) | {"YOLO_OFFLINE": "1", "MLFLOW_TRACKING_URI": uri}
        out = cli("doctor", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        f"PASS  MLflow tracking: postgresql://mlflow:***@127.0.0.1:{port}/mlflow "
        f"(a server accepts connections at 127.0.0.1:{port})" in out.stdout
    )
    assert "s3cret" not in out.stdout + out.stderr


def test_doctor_names_the_export_environment_or_says_how_to_install_it(tmp_path):
    here = check_export_env("")
    assert here.status == "PASS" and "coremltools 9.0" in here.detail and "numpy 2.3" in here.detail
    missing = check_export_env(str(tmp_path / "nope" / "python"))
    assert missing.status == "WARN" and "make export-install" in missing.detail
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: litert_torch' >&2\nexit 1\n")
    broken.chmod(0o755)
    failed = check_export_env(str(broken))
    assert failed.status == "FAIL" and failed.detail.endswith("ModuleNotFoundError: litert_torch")
