"""Shared fixtures: a temporary CV_ASSETS_HOME, a real Dagster instance, real synthetic batches."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.home import prepare_home
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import BatchSummary, parse_shift, write_batches


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    """A fresh embedded-default home under tmp_path, exported to the environment."""
    home = tmp_path / "home"
    for var in ("CV_ASSETS_PROFILE", "CV_ASSETS_LANDING", "CV_ASSETS_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CV_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    c = PlatformConfig.from_env()
    prepare_home(c)
    return c


@pytest.fixture
def instance(cfg: PlatformConfig) -> Iterator[dg.DagsterInstance]:
    """A real instance on SQLite, configured by the repository's own dagster.yaml."""
    inst = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    yield inst
    inst.dispose()


def land(
    cfg: PlatformConfig,
    batches: int = 1,
    images: int = 12,
    seed: int = 0,
    size: int = 96,
    shift: list[str] | None = None,
    **kw,
) -> list[BatchSummary]:
    """Synthetic batches in the landing zone, written by the project's own generator."""
    return write_batches(
        Path(cfg.landing_root),
        batches=batches,
        images_per_batch=images,
        seed=seed,
        size=size,
        shift=parse_shift(shift or []),
        **kw,
    )


# What each planted fault must be quarantined as (synth's kind -> intake's rule).
EXPECTED_RULE = {
    "truncated_jpeg": "corrupt_image",
    "zero_byte": "empty_file",
    "text_as_jpg": "not_an_image",
    "decompression_bomb": "decompression_bomb",
    "class_out_of_range": "class_out_of_range",
    "coords_outside": "coords_outside",
    "zero_area_box": "zero_area_box",
    "nan_value": "nonfinite",
    "wrong_columns": "wrong_columns",
    "non_numeric": "non_numeric",
    "missing_label": "missing_label",
    "orphan_label": "label_without_image",
    "duplicate_image": "duplicate_image",
    "bad_filename": "non_portable_name",
    "symlink": "symlink",
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto in server mode) on 127.0.0.1."""
    import os

    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
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
