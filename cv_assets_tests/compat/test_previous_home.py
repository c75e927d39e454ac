"""A home made by the previous release still works under this one: its history loads, its records
are where this release's layout looks, and its landing sensor resumes from its stored cursor.

The archive is made by ``make_previous_home.py`` with the previous release's own code and daemon.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.ingest.sensors import landing_sensor
from cv_assets.lib.core import layout
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import write_batches
from cv_assets.resources.environment import platform_resources

pytestmark = pytest.mark.asset
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
(ARCHIVE,) = HERE.glob("home-*.tar.gz")  # the release before this one


@pytest.fixture
def previous_home(tmp_path, monkeypatch) -> PlatformConfig:
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    home = tmp_path / "home"
    monkeypatch.setenv("CV_ASSETS_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    return PlatformConfig.from_env()


def _landing_sensor_state(instance: dg.DagsterInstance):
    """The sensor as this release's code server serves it, and what the instance holds for it."""
    target = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
    with WorkspaceProcessContext(instance, target) as ctx:
        location = ctx.create_request_context().get_code_location("cv_assets")
        (repo,) = location.get_repositories().values()
        sensor = repo.get_sensor("landing_sensor")
        origin, selector = sensor.get_remote_origin_id(), sensor.selector_id
    return instance.get_instigator_state(origin, selector), instance.get_ticks(origin, selector)


def test_previous_release_home_loads_and_its_landing_sensor_resumes(previous_home):
    cfg = previous_home
    made = json.loads((cfg.home / "made_by.json").read_text())
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    try:
        old = sorted(instance.get_dynamic_partitions(BATCHES))
        assert len(old) == made["batches"] == 2
        # Its records are where this release's layout looks, byte for byte what was recorded.
        for bid in old:
            (rec,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey("validated_batch"), asset_partitions=[bid]
                ),
                limit=1,
            ).records
            mat = rec.asset_materialization
            assert mat is not None and mat.metadata["accepted"].value == 6
            stored = Path(cfg.artifacts_root) / layout.record("validated_batch", bid)
            digest = hashlib.sha256(stored.read_bytes()).hexdigest()
            assert digest == mat.metadata["record_sha256"].value
        # The code location keeps its name, so the sensor's stored state is found under the ids
        # this release's code server gives it: the daemon resumes it, not a fresh sensor.
        state, ticks = _landing_sensor_state(instance)
        assert state is not None and state.instigator_data is not None
        cursor = state.instigator_data.cursor  # type: ignore[union-attr]
        assert cursor and len(ticks) >= 3
        # One tick of this release's sensor from that cursor: only the newly landed batch.
        (new,) = write_batches(Path(cfg.landing_root), 1, 4, seed=41, size=64, prefix="after")
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=platform_resources(cfg)
        ) as ctx:
            result = landing_sensor(cfg)(ctx)
        assert isinstance(result, dg.SensorResult)
        assert [r.partition_key for r in result.run_requests or []] == [new.batch_id]
    finally:
        instance.dispose()
    # What a person reads about that history: `cv-assets status` on the old home.
    out = subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", "status", "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    status = json.loads(out.stdout)
    assert json.dumps(status).count("batch-0000") >= 1 and "batch-0001" in json.dumps(status)
