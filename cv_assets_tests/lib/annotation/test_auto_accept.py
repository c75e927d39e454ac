import hashlib
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from cv_assets.lib.annotation.auto_accept import (
    accepted_images,
    auto_accepts,
    auto_batch_id,
    land_auto_accepted,
)
from cv_assets.lib.annotation.proposals import BOX_COLUMNS, IMAGE_COLUMNS, Proposals
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.formats.base import human_verified
from cv_assets.lib.ingest.landing import is_valid_batch_id
from cv_assets.lib.ingest.raw import DedupIndex
from cv_assets.lib.ingest.sources import BatchFormat
from cv_assets.lib.synth.batches import CLASSES

pytestmark = pytest.mark.unit

NOW = datetime(2025, 5, 1, tzinfo=UTC)


class RecordingStore(ArtifactStore):
    """An artifact store that remembers the order of its writes."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def put_bytes(self, key, data):
        self.writes.append(key)
        return super().put_bytes(key, data)


def _boxes(rows):
    """BOX_COLUMNS rows from (stem, class id, confidence, cx, cy, w, h); sha256 is h<stem>."""
    return pd.DataFrame.from_records(
        [(f"h{s}", s, k, CLASSES[k], c, cx, cy, w, h) for s, k, c, cx, cy, w, h in rows],
        columns=BOX_COLUMNS,
    )


def test_an_image_is_accepted_only_when_every_proposal_reaches_accept_conf():
    assert auto_accepts([0.95, 0.8], 0.8)  # accept_conf itself is enough
    assert not auto_accepts([0.95, 0.79], 0.8)  # one doubtful box leaves it to a person
    assert not auto_accepts([], 0.0)  # no detection: it may hold an object the model missed
    boxes = _boxes([
        ("a", 0, 0.9, 0.5, 0.5, 0.2, 0.2), ("a", 1, 0.85, 0.2, 0.2, 0.1, 0.1),
        ("b", 0, 0.99, 0.5, 0.5, 0.2, 0.2), ("b", 2, 0.4, 0.7, 0.7, 0.1, 0.1),
        ("c", 2, 0.81, 0.3, 0.3, 0.2, 0.2),
    ])  # fmt: skip
    assert accepted_images(boxes, 0.8) == ["ha", "hc"]
    assert accepted_images(boxes, 0.3) == ["ha", "hb", "hc"]
    assert accepted_images(boxes.iloc[:0], 0.0) == []


def test_the_auto_batch_id_names_the_batch_and_the_champion_and_is_always_valid():
    assert auto_batch_id("batch_0003", "7") == "auto-batch_0003-v7"
    long = auto_batch_id("b" * 128, "12")
    assert is_valid_batch_id(long) and long.startswith("auto-") and long.endswith("-v12")
    assert long == auto_batch_id("b" * 128, "12")  # deterministic: a retry finds its batch


def test_a_model_batch_gives_its_samples_the_model_source_and_no_other_batch_changes():
    fmt = BatchFormat.of({"source": "model:v3", "format": "yolo", "labels": "full"})
    assert fmt.label_source == "model:v3" and not human_verified(fmt.label_source)
    # Only pool images are relabelled: a model batch never overwrites a sample's labels.
    assert not fmt.correction and not fmt.round
    assert BatchFormat.of({"source": "synth"}).label_source == "human"
    assert BatchFormat.of({"source": "review:b1"}).label_source == "review"
    assert BatchFormat.of({"source": "labelstudio:r1"}).label_source == "human"
    assert BatchFormat.of({"format": "coco"}).label_source == "import:coco"


def _pool(tmp_path, stems, reencoded=()):
    """A store holding batch b1's pool images and its dedup index, and their proposals' images."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    rows, digests = [], {}
    for s in stems:
        data = f"jpeg bytes of {s}".encode()
        uri = store.put_bytes(f"validated/b1/std/images/{s}.jpg", data).uri
        # A re-encoded image's pool row keeps the digest of what landed, not of what is stored.
        sha = f"h{s}" if s in reencoded else hashlib.sha256(data).hexdigest()
        digests[s] = sha
        rows.append((sha, s, 1, 0.9, 0.1, uri, 64, 48))
    images = pd.DataFrame.from_records(rows, columns=IMAGE_COLUMNS)
    DedupIndex(store).record(
        "b1", {sha: f"images/{s}.jpg" for s, sha in digests.items()}, list(digests.values())
    )
    return store, images, digests


def _proposals(images, digests, rows):
    boxes = _boxes(rows)
    return Proposals(boxes.assign(sha256=boxes["stem"].map(digests)), images)


def test_accepted_images_land_as_a_yolo_batch_of_model_labels_marker_last(tmp_path):
    store, images, sha = _pool(tmp_path, ["a", "b", "c"])
    props = _proposals(
        images,
        sha,
        [
            ("a", 1, 0.9, 0.5, 0.5, 0.2, 0.4),
            ("a", 0, 0.95, 0.1, 0.1, 0.1, 0.1),
            ("b", 2, 0.3, 0.5, 0.5, 0.2, 0.2),
        ],
    )  # c has no proposal: it is never accepted
    zone = RecordingStore(str(tmp_path / "landing"))
    out = land_auto_accepted(store, zone, props, "b1", "3", CLASSES, 0.8, NOW)
    assert (out.batch_id, out.accepted, out.written) == ("auto-b1-v3", 1, True)
    assert zone.writes[-1] == "auto-b1-v3/batch.json"
    assert sorted(zone.writes[:-1]) == ["auto-b1-v3/images/a.jpg", "auto-b1-v3/labels/a.txt"]
    # The pool's own bytes: intake finds the pool image by this sha256 and labels it.
    landed = zone.get_bytes("auto-b1-v3/images/a.jpg")
    assert hashlib.sha256(landed).hexdigest() == sha["a"]
    assert zone.get_bytes("auto-b1-v3/labels/a.txt").decode() == (
        "1 0.500000 0.500000 0.200000 0.400000\n0 0.100000 0.100000 0.100000 0.100000\n"
    )
    marker = json.loads(zone.get_bytes("auto-b1-v3/batch.json"))
    assert marker == {
        "batch_id": "auto-b1-v3",
        "classes": list(CLASSES),
        "created_at": NOW.isoformat(),
        "source": "model:v3",
        "format": "yolo",
        "labels": "full",
        "accept_conf": 0.8,
    }
    # A retry (the run failed after landing) finds batch.json and writes nothing twice.
    again = RecordingStore(str(tmp_path / "landing"))
    out = land_auto_accepted(store, again, props, "b1", "3", CLASSES, 0.8, NOW)
    assert (out.accepted, out.written, again.writes) == (1, False, [])


def test_images_labelled_since_or_reencoded_at_intake_are_not_landed(tmp_path):
    store, images, sha = _pool(tmp_path, ["a", "b", "c"], reencoded={"c"})
    # b was labelled by a later batch (an annotation round): the model never overrides a person.
    DedupIndex(store).record("r1", {sha["b"]: "images/b.jpg"}, labelled_pool=[sha["b"]])
    props = _proposals(images, sha, [
        ("a", 1, 0.9, 0.5, 0.5, 0.2, 0.4), ("b", 2, 0.9, 0.5, 0.5, 0.2, 0.2),
        ("c", 0, 0.9, 0.5, 0.5, 0.2, 0.2),
    ])  # fmt: skip
    zone = ArtifactStore(str(tmp_path / "landing"))
    out = land_auto_accepted(store, zone, props, "b1", "1", CLASSES, 0.8, NOW)
    assert (out.accepted, out.already_labelled, out.reencoded) == (1, 1, 1)
    assert sorted(zone.list("auto-b1-v1/images")) == ["auto-b1-v1/images/a.jpg"]


def test_nothing_accepted_lands_no_batch(tmp_path):
    store, images, sha = _pool(tmp_path, ["a"])
    props = _proposals(images, sha, [("a", 1, 0.5, 0.5, 0.5, 0.2, 0.4)])
    zone = ArtifactStore(str(tmp_path / "landing"))
    out = land_auto_accepted(store, zone, props, "b1", "1", CLASSES, 0.8, NOW)
    assert (out.accepted, out.written) == (0, False)
    assert list(zone.list("")) == []
