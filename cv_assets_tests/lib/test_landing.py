import json
import os
import time

import pytest

from cv_assets.lib.landing import (
    BatchRefused,
    LandingCursor,
    LandingZone,
    plan_landing_tick,
)
from cv_assets.lib.synth import CLASSES, write_batches

pytestmark = pytest.mark.unit


def test_half_landed_batch_without_marker_is_never_read(tmp_path):
    (s,) = write_batches(tmp_path, 1, 3, seed=1, size=64)
    half = tmp_path / "batch-half"
    (half / "images").mkdir(parents=True)
    (half / "images" / "a.jpg").write_bytes(b"x")
    complete, ignored = LandingZone(str(tmp_path)).scan()
    assert list(complete) == [s.batch_id]
    assert ".synth_targets" not in complete and "batch-half" not in complete
    assert ignored == [] or all(n.startswith(".") for n in ignored)


def test_invalid_batch_ids_are_reported_as_ignored(tmp_path):
    bad = tmp_path / "-bad id"
    bad.mkdir()
    (bad / "batch.json").write_text("{}")
    _, ignored = LandingZone(str(tmp_path)).scan()
    assert "-bad id" in ignored


def test_manifest_ignores_marker_timestamps_but_not_content(tmp_path):
    (s,) = write_batches(tmp_path, 1, 3, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    before = zone.manifest(s.batch_id, CLASSES).sha256
    marker = json.loads((s.path / "batch.json").read_text())
    marker["created_at"] = "2030-01-01T00:00:00Z"
    (s.path / "batch.json").write_text(json.dumps(marker))
    assert zone.manifest(s.batch_id, CLASSES).sha256 == before
    next(iter((s.path / "labels").iterdir())).write_text("0 0.5 0.5 0.1 0.1\n")
    assert zone.manifest(s.batch_id, CLASSES).sha256 != before


def test_class_list_disagreement_refuses_the_whole_batch(tmp_path):
    (s,) = write_batches(tmp_path, 1, 3, seed=1, size=64, classes=("square", "circle", "star"))
    with pytest.raises(BatchRefused, match=r"classes \['square', 'circle', 'star'\] disagree"):
        LandingZone(str(tmp_path)).manifest(s.batch_id, CLASSES)


def _tick(zone, cursor, known, recorded=None):
    return plan_landing_tick(zone, CLASSES, cursor, known, recorded or (lambda b: None))


def test_tick_requests_each_new_batch_once_then_nothing(tmp_path):
    batches = write_batches(tmp_path, 3, 2, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    plan = _tick(zone, LandingCursor(), set())
    assert sorted(b for b, _ in plan.requests) == [b.batch_id for b in batches]
    shas = dict(plan.requests)
    known = set(shas)
    again = _tick(zone, plan.cursor, known, lambda b: shas[b])
    assert again.requests == [] and again.refusals == []


def test_same_batch_landed_again_is_a_no_op(tmp_path):
    (s,) = write_batches(tmp_path, 1, 2, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    first = _tick(zone, LandingCursor(), set())
    sha = dict(first.requests)[s.batch_id]
    # The producer re-sends the same files: batch.json is rewritten, so the marker is newer.
    time.sleep(0.01)
    marker = s.path / "batch.json"
    marker.write_text(marker.read_text())
    os.utime(marker)
    again = _tick(zone, first.cursor, {s.batch_id}, lambda b: sha)
    assert again.requests == [] and again.unchanged == [s.batch_id]


def test_batch_id_reused_with_different_files_is_refused_and_files_stay(tmp_path):
    (s,) = write_batches(tmp_path, 1, 2, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    first = _tick(zone, LandingCursor(), set())
    sha = dict(first.requests)[s.batch_id]
    label = next(iter(sorted((s.path / "labels").iterdir())))
    label.write_text("1 0.5 0.5 0.3 0.3\n")
    time.sleep(0.01)
    os.utime(s.path / "batch.json")
    plan = _tick(zone, first.cursor, {s.batch_id}, lambda b: sha)
    assert plan.requests == []
    ((bid, _stamp, why),) = plan.refusals
    assert bid == s.batch_id and "already ingested with manifest" in why
    assert label.read_text() == "1 0.5 0.5 0.3 0.3\n"
    # A refused batch is not re-hashed on every tick, only when it changes again.
    quiet = _tick(zone, plan.cursor, {s.batch_id}, lambda b: sha)
    assert quiet.refusals == [] and quiet.requests == []


def test_refused_new_batch_is_retried_once_fixed(tmp_path):
    (s,) = write_batches(tmp_path, 1, 2, seed=1, size=64, classes=("a", "b", "c"))
    zone = LandingZone(str(tmp_path))
    plan = _tick(zone, LandingCursor(), set())
    assert [r[0] for r in plan.refusals] == [s.batch_id] and plan.requests == []
    marker = json.loads((s.path / "batch.json").read_text())
    marker["classes"] = list(CLASSES)
    time.sleep(0.01)
    (s.path / "batch.json").write_text(json.dumps(marker))
    fixed = _tick(zone, plan.cursor, set())
    assert [b for b, _ in fixed.requests] == [s.batch_id]
    assert fixed.cursor.refused == {}


def test_tick_over_budget_defers_the_rest_to_the_next_tick(tmp_path):
    write_batches(tmp_path, 3, 2, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    plan = plan_landing_tick(zone, CLASSES, LandingCursor(), set(), lambda b: None, budget_s=0)
    assert len(plan.requests) == 1 and len(plan.deferred) == 2
    nxt = _tick(zone, plan.cursor, {plan.requests[0][0]})
    assert sorted(b for b, _ in nxt.requests) == sorted(plan.deferred)


def test_cursor_round_trips_and_stays_small(tmp_path):
    c = LandingCursor(watermark=123, refused={"b": "1-2"})
    assert LandingCursor.loads(c.dumps()) == c
    assert LandingCursor.loads(None) == LandingCursor()
    assert len(c.dumps()) < 100
