import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.ingest.sensors import landing_sensor
from cv_assets.resources.environment import platform_resources
from cv_assets.status import collect_status
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


# The same path under the real daemon (dagster dev), with planted faults counted, is covered by
# cv_assets_tests/defs/automation/test_daemon_loop.py, which needs it anyway.
