import json
import os
import time

import pytest

from cv_assets.lib.ingest.landing import BatchRefused, LandingZone, brief_list, display_name
from cv_assets.lib.ingest.tick import LandingCursor, plan_landing_tick
from cv_assets.lib.synth.batches import CLASSES, write_batches

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


def _tick(zone, cursor, known, recorded=None, files=None):
    return plan_landing_tick(
        zone, CLASSES, cursor, known, recorded or (lambda b: None), recorded_files=files
    )


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
    assert bid == s.batch_id and "already ingested" in why and "new batch id" in why
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


def _ingested(tmp_path, images=4):
    """A landed batch the sensor has handled: (summary, zone, cursor, sha, manifest then)."""
    (s,) = write_batches(tmp_path, 1, images, seed=1, size=64)
    zone = LandingZone(str(tmp_path))
    first = _tick(zone, LandingCursor(), set())
    return (
        s,
        zone,
        first.cursor,
        dict(first.requests)[s.batch_id],
        zone.manifest(s.batch_id, CLASSES),
    )


def test_files_added_removed_or_replaced_after_intake_are_listed_at_the_next_tick(tmp_path):
    s, zone, cursor, sha, then = _ingested(tmp_path)
    labels = sorted((s.path / "labels").iterdir())
    time.sleep(0.01)
    (s.path / "labels" / "late.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # added
    labels[0].unlink()  # removed
    tmp = labels[1].with_suffix(".tmp")  # replaced the way rsync and editors do: write, rename
    tmp.write_text("2 0.5 0.5 0.3 0.3\n")
    tmp.replace(labels[1])
    plan = _tick(zone, cursor, {s.batch_id}, lambda b: sha, lambda b: then)
    ((bid, _stamp, why),) = plan.refusals
    assert bid == s.batch_id and plan.requests == []
    assert f"changed 1 (labels/{labels[1].name})" in why
    assert "added 1 (labels/late.txt)" in why
    assert f"removed 1 (labels/{labels[0].name})" in why
    assert "hash" not in why and "new batch id" in why


def test_a_file_rewritten_in_place_after_intake_is_caught_by_the_sweep(tmp_path):
    s, zone, cursor, sha, then = _ingested(tmp_path)
    label = sorted((s.path / "labels").iterdir())[2]
    original = label.read_bytes()
    time.sleep(0.01)
    label.write_text("1 0.5 0.5 0.3 0.3\n")  # same inode: no folder's mtime moves
    plan = _tick(zone, cursor, {s.batch_id}, lambda b: sha, lambda b: then)
    ((_bid, _stamp, why),) = plan.refusals
    assert f"changed 1 (labels/{label.name})" in why
    # Refused once; not re-hashed on later ticks until it changes again.
    quiet = _tick(zone, plan.cursor, {s.batch_id}, lambda b: sha, lambda b: then)
    assert quiet.refusals == [] and quiet.requests == [] and quiet.unchanged == []
    # Changed back to what was ingested: the batch is no longer refused.
    time.sleep(0.01)
    label.write_bytes(original)
    back = _tick(zone, quiet.cursor, {s.batch_id}, lambda b: sha, lambda b: then)
    assert back.unchanged == [s.batch_id] and back.refusals == []
    assert back.cursor.refused == {}


def test_symlinked_batch_folder_is_refused_with_a_reason_not_skipped(tmp_path):
    landing = tmp_path / "landing"
    (s,) = write_batches(tmp_path / "elsewhere", 1, 2, seed=1, size=64)
    landing.mkdir()
    (landing / s.batch_id).symlink_to(s.path, target_is_directory=True)
    zone = LandingZone(str(landing))
    plan = _tick(zone, LandingCursor(), set())
    assert plan.requests == []
    ((bid, _stamp, why),) = plan.refusals
    assert bid == s.batch_id and "symbolic link" in why and "never followed" in why
    assert _tick(zone, plan.cursor, set()).refusals == []  # once, until it changes


def test_a_huge_class_list_is_refused_by_count_and_quoted_briefly(tmp_path):
    (s,) = write_batches(tmp_path, 1, 2, seed=1, size=64)
    marker = json.loads((s.path / "batch.json").read_text())
    marker["classes"] = [f"class_{i:06d}" for i in range(100_000)]
    (s.path / "batch.json").write_text(json.dumps(marker))
    with pytest.raises(BatchRefused) as exc:
        LandingZone(str(tmp_path)).manifest(s.batch_id, CLASSES)
    why = str(exc.value)
    assert "declares 100,000 classes, more than the limit of 1,000 (max_classes)" in why
    assert "class_000000" in why and "more)" in why and len(why) < 400
    marker["classes"] = [f"class_{i}" for i in range(50)]  # under the limit, still foreign
    (s.path / "batch.json").write_text(json.dumps(marker))
    with pytest.raises(BatchRefused, match=r"\(40 more\)\] disagree") as exc:
        LandingZone(str(tmp_path)).manifest(s.batch_id, CLASSES)
    assert len(str(exc.value)) < 600


def test_a_folder_that_cannot_be_listed_is_recorded_as_unreadable(tmp_path):
    (s,) = write_batches(tmp_path, 1, 2, seed=1, size=64)
    # Nested past the system's path limit (PATH_MAX 4096): os.walk cannot list the deepest
    # folder and, left to itself, skips it without a word. Built with dir_fd, as a hostile
    # producer (or a tar file) can.
    fd = os.open(s.path / "images", os.O_RDONLY)
    try:
        for _ in range(25):
            os.mkdir("d" * 200, dir_fd=fd)
            nxt = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    finally:
        os.close(fd)
    entries = LandingZone(str(tmp_path)).manifest(s.batch_id, CLASSES).entries
    (bad,) = [e for e in entries if e.kind == "unreadable"]
    assert bad.path.startswith("images/" + "d" * 200) and bad.sha256 is None


def test_names_and_lists_are_shown_escaped_and_brief():
    raw = os.fsdecode(b"images/\xff\xfe.jpg")
    assert display_name(raw) == "images/\\xff\\xfe.jpg"
    assert display_name("a\nb") == "a\\nb" and display_name("plain.jpg") == "plain.jpg"
    json.dumps(display_name(raw)).encode("utf-8")  # storable
    text = brief_list([f"n{i}" for i in range(100_000)])
    assert text.startswith("n0, n1") and text.endswith("... (99,990 more)") and len(text) < 120
    assert len(brief_list(["x" * 10_000])) < 260
