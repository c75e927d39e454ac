import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.cli.status import collect_status
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.defs.ingest.sensors import landing_sensor
from cv_assets.resources.environment import platform_resources
from cv_assets_tests.support.landing import land


def tick(cfg, instance, cursor=None) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=platform_resources(cfg)
    ) as ctx:
        result = landing_sensor(cfg)(ctx)
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


def refusal(cfg, batch_id) -> dict:
    return json.loads((Path(cfg.artifacts_root) / "refusals" / f"{batch_id}.json").read_text())


@pytest.mark.asset
def test_symlinked_batch_folder_is_refused_with_reason_not_skipped(cfg, instance, tmp_path):
    (s,) = land(cfg, images=3)
    outside = tmp_path / "outside" / s.batch_id
    outside.parent.mkdir()
    shutil.move(s.path, outside)
    s.path.symlink_to(outside, target_is_directory=True)
    result = tick(cfg, instance)
    assert not result.run_requests and instance.get_dynamic_partitions(BATCHES) == []
    why = refusal(cfg, s.batch_id)["reason"]
    assert "batch folder is a symbolic link" in why and "never followed" in why
    status = collect_status(cfg)["batches"]
    assert {"batch_id": s.batch_id, "reason": why} in status["refusals"]


@pytest.mark.asset
def test_files_changed_after_intake_are_refused_file_by_file_at_the_next_tick(cfg, instance):
    from cv_assets_tests.support.jobs import run_intake

    (s,) = land(cfg, images=4)
    first = tick(cfg, instance)
    run_intake(cfg, instance, s.batch_id)
    raw_manifest = Path(cfg.artifacts_root) / "raw" / s.batch_id / "manifest.json"
    before = raw_manifest.read_bytes()
    labels = sorted((s.path / "labels").iterdir())
    time.sleep(0.01)
    labels[0].write_text("2 0.5 0.5 0.5 0.5\n")  # rewritten in place
    labels[1].unlink()
    (s.path / "images" / "late.jpg").write_bytes(next((s.path / "images").iterdir()).read_bytes())
    result = tick(cfg, instance, first.cursor)
    assert not result.run_requests
    why = refusal(cfg, s.batch_id)["reason"]
    assert f"changed 1 (labels/{labels[0].name})" in why
    assert "added 1 (images/late.jpg)" in why and f"removed 1 (labels/{labels[1].name})" in why
    assert "new batch id" in why and "hash" not in why
    assert raw_manifest.read_bytes() == before  # the raw copy keeps what was ingested
    status = collect_status(cfg)["batches"]
    assert status["refused"] == 1 and status["refusals"][0]["reason"] == why
    # Refused once: later ticks neither re-hash it nor launch anything.
    again = tick(cfg, instance, result.cursor)
    assert not again.run_requests and json.loads(again.cursor or "{}")["refused"]


@pytest.mark.asset
def test_a_100000_class_list_is_quoted_briefly_in_the_refusal_and_status(cfg, instance):
    (s,) = land(cfg, images=2)
    marker = json.loads((s.path / "batch.json").read_text())
    marker["classes"] = [f"class_{i:06d}" for i in range(100_000)]
    (s.path / "batch.json").write_text(json.dumps(marker))
    tick(cfg, instance)
    why = refusal(cfg, s.batch_id)["reason"]
    assert "declares 100,000 classes, more than the limit of 1,000 (max_classes)" in why
    assert "class_000009, ... (99,990 more)" in why and len(why) < 400
    record = Path(cfg.artifacts_root) / "refusals" / f"{s.batch_id}.json"
    assert record.stat().st_size < 1000
    assert len(json.dumps(collect_status(cfg)["batches"]["refusals"])) < 1000
