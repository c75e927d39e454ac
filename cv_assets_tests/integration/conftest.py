"""Real services on 127.0.0.1 for the integration tests: PostgreSQL, the S3 server, MLflow.

- ``pg``: one throwaway PostgreSQL cluster for the session (databases ``dagster`` and ``mlflow``),
  started from Debian's binaries (``.ci/services.sh`` installs them). Without the binaries the
  tests skip, except under ``CI`` where a missing service is a failure, never a silent skip.
- ``s3_endpoint`` / ``s3_bucket`` (from the top conftest): moto in server mode.
- ``mlflow_server``: a real ``mlflow server`` process, tracking and registry on a Postgres
  database of its own, artifacts in the bucket.
- ``labelstudio``: one real Label Studio server for the session (``.venv-labelstudio``, which
  ``make test`` installs), on a free 127.0.0.1 port, with its own data and document root.
- ``cloud_env``: the environment a deployment sets (``CV_ASSETS_PROFILE=cloud`` …) and a
  ``DAGSTER_HOME`` whose ``dagster.yaml`` is ``deploy/dagster.postgres.yaml``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cv_assets.dev.procs import stop_group
from cv_assets_tests.integration.pg import PgCluster, find_bindir, start_cluster
from cv_assets_tests.support.labelstudio import LabelStudioServer, binary, start_labelstudio
from cv_assets_tests.support.processes import free_port


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(autouse=True)
def _quiet_s3_server(caplog: pytest.LogCaptureFixture) -> None:
    """moto's web server logs every request; thousands of lines would bury a failure."""
    caplog.set_level(logging.WARNING, logger="werkzeug")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster on a free 127.0.0.1 port, stopped and deleted after the session."""
    if find_bindir() is None:
        reason = (
            "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in "
            "/usr/lib/postgresql/*/bin): run .ci/services.sh"
        )
        if _ci():
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = start_cluster(("dagster", "mlflow"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """Label Studio on a free 127.0.0.1 port, stopped after the session."""
    if not binary().exists():
        reason = f"Label Studio is not installed ({binary()}): run `make labelstudio-install`"
        if _ci():
            pytest.fail(f"CI is set and {reason}", pytrace=False)
        pytest.skip(reason)
    server = start_labelstudio(tmp_path_factory.mktemp("labelstudio"))
    yield server
    server.stop()


@pytest.fixture
def pg_db(pg: PgCluster) -> Callable[[str], str]:
    """Makes a fresh database (``<prefix>_<hex>``) so that tests never see each other's rows."""

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        pg.create_database(name)
        return name

    return make


@dataclass
class MlflowServer:
    url: str
    db: str
    proc: subprocess.Popen


@pytest.fixture
def mlflow_server(
    pg: PgCluster, pg_db: Callable[[str], str], s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1: tracking and registry on Postgres, artifacts in the bucket.

    One per test, on a database of its own, so that each test's registry starts empty.
    """
    db = pg_db("mlflow")
    port = free_port()
    env = dict(os.environ) | {
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    log = tmp_path / "mlflow-server.log"
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", pg.dsn(db),
        "--default-artifact-root", f"{s3_bucket}/mlflow", "--no-serve-artifacts",
    ]  # fmt: skip
    with open(log, "wb") as out:
        # A session of its own: the CLI starts the web server as a child, and both must go.
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield MlflowServer(url, db, proc)
    finally:
        # A throwaway server: a short grace period, not waiting for idle keep-alive connections.
        stop_group(proc, grace_s=2)
