"""Shared fixtures (a temporary CV_ASSETS_HOME, a real Dagster instance, the S3 server) and the
hook that keeps each run's durations. Helpers live in ``cv_assets_tests/support/``."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.dev.home import prepare_home
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets_tests.support.processes import free_port
from cv_assets_tests.support.reports import write_durations


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    """Keeps this run's durations under .cv_assets/test-reports/ and says where."""
    try:
        path = write_durations(terminalreporter, exitstatus)
    except OSError as e:  # a read-only checkout must not fail the run
        terminalreporter.write_line(f"test durations not kept: {e}")
        return
    if path is not None:
        where = path.relative_to(terminalreporter.config.rootpath)
        terminalreporter.write_line(f"durations of every test, slowest first: {where}")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    """A fresh embedded-default home under tmp_path, exported to the environment."""
    home = tmp_path / "home"
    for var in ("CV_ASSETS_PROFILE", "CV_ASSETS_LANDING", "CV_ASSETS_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CV_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    # The phones' files cost ~30 s per training run; the tests about them turn them on
    # (cv_assets_tests/defs/mobile, lib/mobile/test_platforms.py).
    monkeypatch.setenv("CV_ASSETS_PHONE_FILES", "0")
    c = PlatformConfig.from_env()
    prepare_home(c)
    return c


@pytest.fixture
def instance(cfg: PlatformConfig) -> Iterator[dg.DagsterInstance]:
    """A real instance on SQLite, configured by the repository's own dagster.yaml."""
    inst = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    yield inst
    inst.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto in server mode) on 127.0.0.1."""
    import os

    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the S3 server; returns its s3:// root."""
    import uuid

    from cv_assets.lib.core.store import s3_client

    name = f"cv-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"
