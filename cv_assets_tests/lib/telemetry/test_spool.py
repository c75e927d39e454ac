"""The spool: each event id stored once, durably, and flushed to Parquet exactly once."""

import base64
import json
import random
import sqlite3

import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.contract import validate_batch
from cv_assets.lib.telemetry.spool import Spool, frame_key, part_key
from cv_assets_tests.telemetry.service import jpeg_b64, make_event, parquet_rows

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def accepted(events):
    ok, rejected = validate_batch({"schema_version": 1, "events": events}, {"2": 3})
    assert rejected == []
    return ok


def test_add_counts_duplicates_and_stores_each_id_once(tmp_path, store):
    rng = random.Random(1)
    events = [make_event(rng) for _ in range(50)]
    spool = Spool(tmp_path / "spool", store)
    assert spool.add(events) == (50, 0)
    assert spool.add([*events[:20], make_event(rng)]) == (1, 20)
    assert spool.pending() == 51


def test_acknowledged_events_are_in_a_new_connection(tmp_path, store):
    """``add`` commits before it returns: what another process opens sees the rows."""
    events = [make_event() for _ in range(5)]
    Spool(tmp_path / "spool", store).add(events)  # never closed, as after a kill
    db = sqlite3.connect(tmp_path / "spool" / "spool.db")
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 5
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_flush_writes_parquet_grouped_by_day_and_model_with_flat_columns(tmp_path, store):
    rng = random.Random(2)
    events = [make_event(rng, time="2026-12-01T10:00:00Z") for _ in range(4)]
    events += [make_event(rng, time="2026-12-02T11:30:00.250Z", model_version="1")]
    events[0]["detections"] = [
        {"class_id": 1, "confidence": 0.9, "box": [0.1, 0.1, 0.2, 0.2]},
        {"class_id": 2, "confidence": 0.5, "box": [0.3, 0.3, 0.6, 0.6]},
    ]
    spool = Spool(tmp_path / "spool", store)
    spool.add(events)
    keys = spool.flush()
    assert keys == [part_key("2026-12-01", "2", 1, 4), part_key("2026-12-02", "1", 5, 5)]
    assert (
        keys[0] == "telemetry/events/day=2026-12-01/model=2/part-000000000001-000000000004.parquet"
    )
    rows = {r["event_id"]: r for r in parquet_rows(store)}
    assert set(rows) == {e["event_id"] for e in events}
    first = rows[events[0]["event_id"]]
    assert first["n_detections"] == 2
    assert first["max_confidence"] == 0.9
    assert first["mean_confidence"] == pytest.approx(0.7)
    assert json.loads(first["detections"]) == events[0]["detections"]
    assert (
        first["input_width"] == 1280
        and first["input_brightness"] == events[0]["input"]["brightness"]
    )
    assert first["time"].isoformat() == "2026-12-01T10:00:00+00:00"
    assert rows[events[4]["event_id"]]["time"].isoformat() == "2026-12-02T11:30:00.250000+00:00"
    assert spool.pending() == 0 and spool.flush() == []


def test_no_detections_leave_confidence_summaries_empty(tmp_path, store):
    spool = Spool(tmp_path / "spool", store)
    spool.add([make_event(detections=[])])
    spool.flush()
    (row,) = parquet_rows(store)
    assert row["n_detections"] == 0 and row["max_confidence"] is None
    assert row["mean_confidence"] is None and row["detections"] == "[]"


def test_a_crash_between_writing_a_part_and_marking_it_rewrites_the_same_part(tmp_path, store):
    rng = random.Random(3)
    spool = Spool(tmp_path / "spool", store)
    spool.add([make_event(rng, time="2026-12-01T10:00:00Z") for _ in range(10)])
    keys = spool.flush()
    # The process died after the part was written, before its rows were marked flushed.
    db = sqlite3.connect(tmp_path / "spool" / "spool.db")
    db.execute("UPDATE events SET flushed = 0")
    db.commit()
    # Events that arrived meanwhile must go to a part of their own, not into the old one.
    later = [make_event(rng, time="2026-12-01T12:00:00Z") for _ in range(3)]
    restarted = Spool(tmp_path / "spool", store)
    restarted.add(later)
    again = restarted.flush()
    assert again[0] == keys[0] and again[1] == part_key("2026-12-01", "2", 11, 13)
    rows = parquet_rows(store)
    assert len(rows) == 13 and len({r["event_id"] for r in rows}) == 13


def test_frames_are_files_in_the_store_and_the_payload_keeps_the_uri(tmp_path, store):
    image = jpeg_b64()
    e = make_event(consent_image=True, image=image, time="2026-12-01T10:00:00Z")
    spool = Spool(tmp_path / "spool", store)
    assert spool.add(accepted([e])) == (1, 0)
    key = frame_key("2026-12-01", e["event_id"])
    assert key == f"telemetry/frames/2026-12-01/{e['event_id']}.jpg"
    assert store.get_bytes(key) == base64.b64decode(image)
    payload = (
        sqlite3.connect(tmp_path / "spool" / "spool.db")
        .execute("SELECT payload FROM events")
        .fetchone()[0]
    )
    assert "image" not in json.loads(payload) and image not in payload
    # A resent event with another frame keeps the first frame.
    other = e | {"image": base64.b64encode(b"\xff\xd8\xff other").decode()}
    assert spool.add(accepted([other])) == (0, 1)
    assert store.get_bytes(key) == base64.b64decode(image)
    spool.flush()
    (row,) = parquet_rows(store)
    assert row["image_uri"] == store.uri(key)


WEEK = 7 * 86400.0


def received_earlier(tmp_path, seconds: float, ids) -> None:
    """Moves the rows of ``ids`` ``seconds`` into the past, as if they had arrived then."""
    db = sqlite3.connect(tmp_path / "spool" / "spool.db")
    with db:
        db.executemany(
            "UPDATE events SET received_at = received_at - ? WHERE event_id = ?",
            [(seconds, i) for i in ids],
        )
    db.close()


def spooled_ids(tmp_path) -> set[str]:
    db = sqlite3.connect(tmp_path / "spool" / "spool.db")
    ids = {r[0] for r in db.execute("SELECT event_id FROM events")}
    db.close()
    return ids


def test_prune_removes_only_flushed_rows_older_than_the_window(tmp_path, store):
    rng = random.Random(4)
    old, recent, unflushed = ([make_event(rng) for _ in range(n)] for n in (5, 2, 3))
    spool = Spool(tmp_path / "spool", store)
    spool.add([*old, *recent])
    spool.flush()
    received_earlier(tmp_path, WEEK + 3600, [e["event_id"] for e in old])
    spool.add(unflushed)  # arrived as long ago, but never reached the store
    received_earlier(tmp_path, WEEK + 3600, [e["event_id"] for e in unflushed])
    assert spool.prune(WEEK) == 5
    assert spooled_ids(tmp_path) == {e["event_id"] for e in [*recent, *unflushed]}
    assert spool.pending() == 3
    assert spool.prune(WEEK) == 0
    spool.flush()
    ids = [r["event_id"] for r in parquet_rows(store)]
    assert sorted(ids) == sorted(e["event_id"] for e in [*old, *recent, *unflushed])


def test_prune_keeps_a_part_planned_but_not_marked_flushed(tmp_path, store):
    rng = random.Random(5)
    events = [make_event(rng, time="2026-12-01T10:00:00Z") for _ in range(4)]
    spool = Spool(tmp_path / "spool", store)
    spool.add(events)
    (key,) = spool.flush()
    # The process died after the part was written, before its rows were marked flushed.
    db = sqlite3.connect(tmp_path / "spool" / "spool.db")
    with db:
        db.execute("UPDATE events SET flushed = 0")
    db.close()
    received_earlier(tmp_path, WEEK + 3600, [e["event_id"] for e in events])
    assert spool.prune(WEEK) == 0 and spool.pending() == 4
    assert spool.flush() == [key]  # the same part, written again whole
    assert spool.prune(WEEK) == 4 and spooled_ids(tmp_path) == set()
    assert len(parquet_rows(store)) == 4


def test_the_dedup_window_bounds_deduplication(tmp_path, store):
    rng = random.Random(6)
    outside, inside = make_event(rng), make_event(rng)
    spool = Spool(tmp_path / "spool", store)
    spool.add([outside, inside])
    spool.flush()
    received_earlier(tmp_path, WEEK + 3600, [outside["event_id"]])
    assert spool.prune(WEEK) == 1
    # Resent: the id inside the window is still a duplicate; the pruned one is stored again.
    assert spool.add([outside, inside]) == (1, 1)
    spool.flush()
    ids = [r["event_id"] for r in parquet_rows(store)]
    assert ids.count(outside["event_id"]) == 2 and ids.count(inside["event_id"]) == 1


def test_part_keys_are_not_reused_after_pruning(tmp_path, store):
    """Emptied by pruning, a table of plain rowids would number from 1 again and name the first
    part once more, overwriting it; the AUTOINCREMENT sequence goes on."""
    rng = random.Random(7)
    first = [make_event(rng, time="2026-12-01T10:00:00Z") for _ in range(3)]
    spool = Spool(tmp_path / "spool", store)
    spool.add(first)
    earlier = spool.flush()
    assert earlier == [part_key("2026-12-01", "2", 1, 3)]
    received_earlier(tmp_path, WEEK + 3600, [e["event_id"] for e in first])
    assert spool.prune(WEEK) == 3 and spooled_ids(tmp_path) == set()
    spool.close()
    reopened = Spool(tmp_path / "spool", store)
    later = [make_event(rng, time="2026-12-01T11:00:00Z") for _ in range(3)]
    reopened.add(later)
    keys = reopened.flush()
    assert keys == [part_key("2026-12-01", "2", 4, 6)] and not set(keys) & set(earlier)
    rows = parquet_rows(store)
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in first + later)
