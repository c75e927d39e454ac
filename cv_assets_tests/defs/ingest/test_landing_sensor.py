import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.ingest.sensors import landing_sensor
from cv_assets.home import REPO
from cv_assets.resources.environment import platform_resources
from cv_assets.status import collect_status, latest_by_partition
from cv_assets_tests.conftest import land


def tick(cfg, instance, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=platform_resources(cfg)
    ) as ctx:
        result = landing_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    # What the daemon does with the result: add the partitions it asked for.
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(BATCHES, list(req.partition_keys))  # type: ignore[union-attr]
    return result


@pytest.mark.asset
def test_sensor_adds_partitions_and_keys_runs_by_batch_and_manifest(cfg, instance):
    batches = land(cfg, batches=2, images=3)
    result = tick(cfg, instance)
    reqs = result.run_requests or []
    assert sorted(str(r.partition_key) for r in reqs) == [b.batch_id for b in batches]
    for r in reqs:
        bid, sha = (r.run_key or "").split(":")
        assert bid == r.partition_key and len(sha) == 16
        assert r.tags["cv_assets/manifest_sha256"].startswith(sha)
    assert sorted(instance.get_dynamic_partitions(BATCHES)) == [b.batch_id for b in batches]
    again = tick(cfg, instance, result.cursor)
    assert not again.run_requests and not again.dynamic_partitions_requests


@pytest.mark.asset
def test_sensor_ignores_half_landed_batch_until_its_marker_arrives(cfg, instance):
    (s,) = land(cfg, images=3)
    marker = s.path / "batch.json"
    held = marker.read_bytes()
    marker.unlink()
    first = tick(cfg, instance)
    assert not first.run_requests
    marker.write_bytes(held)
    second = tick(cfg, instance, first.cursor)
    assert [r.partition_key for r in second.run_requests or []] == [s.batch_id]


@pytest.mark.asset
def test_sensor_refuses_batch_with_foreign_class_list_and_records_why(cfg, instance):
    (s,) = land(cfg, images=3, classes=("cat", "dog", "bird"))
    result = tick(cfg, instance)
    assert not result.run_requests and instance.get_dynamic_partitions(BATCHES) == []
    refusal = json.loads((Path(cfg.artifacts_root) / "refusals" / f"{s.batch_id}.json").read_text())
    assert "disagree with the platform's class list" in refusal["reason"]
    assert s.path.joinpath("batch.json").exists()  # files stay where they landed
    status = collect_status(cfg)
    assert status["batches"]["refused"] == 1


@pytest.mark.asset
def test_sensor_tick_with_many_known_batches_stays_cheap(cfg, instance):
    landing = Path(cfg.landing_root)
    (s,) = land(cfg, images=1)
    ids = [f"b{i:05d}" for i in range(2000)]
    for bid in ids:
        shutil.copytree(s.path, landing / bid, symlinks=True)
        data = json.loads((landing / bid / "batch.json").read_text()) | {"batch_id": bid}
        (landing / bid / "batch.json").write_text(json.dumps(data))
    instance.add_dynamic_partitions(BATCHES, [*ids, s.batch_id])
    cursor = json.dumps({"wm": time.time_ns(), "refused": {}})
    t0 = time.perf_counter()
    result = tick(cfg, instance, cursor)
    assert not result.run_requests
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_daemon_takes_landed_batches_through_sensor_run_and_partitions(cfg, tmp_path):
    """The real path: files land, the daemon's sensor sees them, queued runs materialise."""
    batches = land(cfg, batches=2, images=6, corrupt_fraction=0.34)
    env = dict(os.environ) | {"CV_ASSETS_SENSOR_INTERVAL": "2"}
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            "127.0.0.1",
            "-p",
            "0",
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    try:
        want = {b.batch_id for b in batches}
        deadline = time.monotonic() + 300
        while (
            time.monotonic() < deadline
            and set(latest_by_partition(instance, "validated_batch")) != want
        ):
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(2)
        done = latest_by_partition(instance, "validated_batch")
        assert set(done) == want, (tmp_path / "daemon.log").read_text()[-3000:]
        assert set(instance.get_dynamic_partitions(BATCHES)) == want
        flt = dg.RunsFilter(tags={"cv_assets/trigger": "landing"})
        while time.monotonic() < deadline and any(
            not r.is_finished for r in instance.get_runs(flt)
        ):
            time.sleep(1)  # materialised; the run itself may still be closing
        runs = instance.get_runs(flt)
        assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(want)
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * len(want)
        for b in batches:
            m = done[b.batch_id]
            assert m["landed"] == b.files_landed == m["accepted"] + m["quarantined"]
    finally:
        if proc.poll() is None:
            # dagster dev shuts down cleanly on SIGINT (its Ctrl-C path); on a loaded machine
            # it may still take long, and the test's verdict is already in.
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        instance.dispose()
