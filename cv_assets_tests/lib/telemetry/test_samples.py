"""Sampled frames: low-confidence ones land once as an unlabelled batch, random ones form the
audit set, and people's labels of it come back under intake's rules."""

import io
import json
import os
from datetime import UTC, datetime

import pandas as pd
import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.landing import is_valid_batch_id
from cv_assets.lib.telemetry.audit import (
    LABELS,
    audit_events,
    audit_labels,
    export_audit,
    import_audit,
    record_audit,
)
from cv_assets.lib.telemetry.samples import land_low_confidence

CLASSES = ["square", "circle", "triangle"]
DAY = "2026-11-30"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _events(store: ArtifactStore, sampling: list[str], consent: list[bool]) -> pd.DataFrame:
    rows = []
    for i, (s, c) in enumerate(zip(sampling, consent, strict=True)):
        eid = f"ev-{i:03d}"
        uri = store.put_bytes(f"telemetry/frames/{DAY}/{eid}.jpg", f"jpeg {i}".encode()).uri
        rows.append({
            "event_id": eid, "time": pd.Timestamp(f"{DAY}T00:{i:02d}:00Z"), "sampling": s,
            "image_uri": uri if c and s != "none" else None, "model_version": "3",
            "device_model": "Pixel 8", "app_version": "2.15.0", "max_confidence": 0.2,
            "detections": "[]", "input_width": 96, "input_height": 96,
        })  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def stores(tmp_path):
    return ArtifactStore(str(tmp_path / "artifacts")), ArtifactStore(str(tmp_path / "landing"))


def test_low_confidence_frames_land_once_as_an_unlabelled_batch(stores):
    store, zone = stores
    sampling = ["low_confidence"] * 4 + ["random", "none"]
    events = _events(store, sampling, [True, True, False, True, True, True])
    out = land_low_confidence(store, zone, DAY, events, CLASSES, NOW)
    assert (out.sampled, out.with_frame, out.landed) == (4, 3, 3)
    assert out.batch_id is not None and is_valid_batch_id(out.batch_id)
    marker = json.loads(zone.get_bytes(f"{out.batch_id}/batch.json"))
    assert marker["labels"] == "none" and marker["classes"] == CLASSES
    assert marker["source"] == f"telemetry:{DAY}"
    images = sorted(zone.list(f"{out.batch_id}/images/"))
    assert [k.rsplit("/", 1)[1] for k in images] == ["ev-000.jpg", "ev-001.jpg", "ev-003.jpg"]
    assert zone.get_bytes(images[0]) == b"jpeg 0"

    # The day again, with one late event: only the new frame lands, in a batch of its own.
    late = pd.concat([events, _events(store, ["low_confidence"] * 8, [True] * 8).iloc[7:]])
    again = land_low_confidence(store, zone, DAY, late, CLASSES, NOW)
    assert (again.landed, again.landed_before) == (1, 3)
    assert again.batch_id not in (None, out.batch_id)
    assert land_low_confidence(store, zone, DAY, late, CLASSES, NOW).batch_id is None


def test_random_frames_form_the_audit_set_and_export_what_is_unlabelled(stores, tmp_path):
    store, _ = stores
    events = _events(store, ["random", "random", "random", "low_confidence"], [True] * 4)
    assert record_audit(store, DAY, events) == 3
    assert list(audit_events(store)["event_id"]) == ["ev-000", "ev-001", "ev-002"]
    store.put_bytes(f"{LABELS}ev-001.txt", b"")
    assert export_audit(store, tmp_path / "out", CLASSES) == 2
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "ev-000.jpg", "ev-002.jpg",
    ]  # fmt: skip
    assert (tmp_path / "out" / "classes.txt").read_text().split() == CLASSES


def test_imported_labels_follow_intakes_rules_and_every_file_is_counted(stores, tmp_path):
    store, _ = stores
    record_audit(store, DAY, _events(store, ["random"] * 6, [True] * 6))
    src = tmp_path / "export" / "labels"
    src.mkdir(parents=True)
    (src / "ev-000.txt").write_text("0 0.5 0.5 0.2 0.2\r\n1 0.25 0.25 0.1 0.1\n")
    (src / "ev-001.txt").write_text("")  # labelled: nothing in the frame
    (src / "ev-002.txt").write_text("0 0.5 0.5 0.2 0.2\n2 1.5 0.5 0.2 0.2\n")
    (src / "ev-003.txt").write_text("0 0.5 0.5 0 0.2\n")
    (src / "ev-004.txt").write_bytes(b"\xff\xfe\x00")
    (src / "stranger.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    os.symlink(tmp_path / "elsewhere.txt", src / "ev-005.txt")
    res = import_audit(store, tmp_path / "export", CLASSES)
    assert res.read == 7 and res.accepted == 2 and len(res.quarantined) == 5
    assert res.read == res.accepted + len(res.quarantined)
    why = dict(res.quarantined)
    assert "labels/ev-002.txt:2: cx = 1.5 outside [0, 1]" in why["labels/ev-002.txt"]
    assert "zero or negative size" in why["labels/ev-003.txt"]
    assert "not UTF-8" in why["labels/ev-004.txt"]
    assert "not an audit frame" in why["labels/stranger.txt"]
    assert "not a regular file" in why["labels/ev-005.txt"]
    labels = audit_labels(store)
    assert labels == {"ev-000": "0 0.500000 0.500000 0.200000 0.200000\n"
                      "1 0.250000 0.250000 0.100000 0.100000\n", "ev-001": ""}  # fmt: skip
    record = json.loads(io.BytesIO(store.get_bytes(store.key_of(str(res.record)))).read())
    assert record["accepted"] == 2 and len(record["quarantined"]) == 5

    # A corrected label replaces the earlier one and says so.
    for f in src.iterdir():
        f.unlink()
    (src / "ev-001.txt").write_text("2 0.5 0.5 0.3 0.3\n")
    res2 = import_audit(store, tmp_path / "export", CLASSES)
    assert (res2.accepted, res2.replaced) == (1, 1)
    assert audit_labels(store)["ev-001"].startswith("2 ")


def test_an_import_without_label_files_is_refused(stores, tmp_path):
    store, _ = stores
    with pytest.raises(FileNotFoundError, match=r"holds no \.txt label files"):
        import_audit(store, tmp_path, CLASSES)
