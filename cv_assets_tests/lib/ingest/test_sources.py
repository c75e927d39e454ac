"""Contract v2 through intake: partly labelled and unlabelled batches, an Ultralytics dataset,
the unlabelled pool, and label provenance in the dataset snapshot."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.snapshot import build_snapshot
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.labels import LabelLimits
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.ingest.raw import copy_raw_batch
from cv_assets.lib.ingest.validate import Validation, validate_batch
from cv_assets.lib.synth.batches import CLASSES, write_batches

pytestmark = pytest.mark.unit


def _marker(batch: Path, **fields) -> None:
    marker = batch / "batch.json"
    marker.write_text(json.dumps(json.loads(marker.read_text()) | fields))


def _validate(tmp_path: Path, batch_id: str, store: ArtifactStore | None = None) -> Validation:
    store = store or ArtifactStore(str(tmp_path / "artifacts"))
    raw = copy_raw_batch(LandingZone(str(tmp_path / "landing")), store, batch_id, CLASSES)
    return validate_batch(
        store, raw, CLASSES, max_classes=1000, min_acceptance_rate=0.5,
        limits=ImageLimits(), label_limits=LabelLimits(),
    )  # fmt: skip


def _local(store: ArtifactStore, uri: str) -> Path:
    path = store.local_path(store.key_of(uri))
    assert path is not None
    return path


def _table(store: ArtifactStore, ref: Any) -> pd.DataFrame:
    return pd.read_parquet(_local(store, ref["uri"]))


def test_a_partly_labelled_batch_takes_unlabelled_images_into_the_pool(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 8, seed=1, size=64)
    for stem in ("batch-0000_00001", "batch-0000_00004", "batch-0000_00006"):
        (b.path / "labels" / f"{stem}.txt").unlink()
    _marker(b.path, labels="partial")
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 8, "accepted": 5, "unlabelled": 3, "quarantined": 0}
    assert v.validated.get("unlabelled") == 3 and v.validated.get("labels") == "partial"
    store = ArtifactStore(str(tmp_path / "artifacts"))
    pool = _table(store, v.validated.get("unlabelled_table"))
    assert sorted(pool["stem"]) == ["batch-0000_00001", "batch-0000_00004", "batch-0000_00006"]
    assert bool(pool["sha256"].str.len().eq(64).all()) and bool(pool["width"].eq(64).all())
    samples = _table(store, v.validated["samples"])
    assert set(samples["label_source"]) == {"human"} and "batch-0000_00001" not in set(
        samples["stem"]
    )
    # Every image is measured; an unlabelled one's box features are unknown, not zero.
    features = pd.read_parquet(_local(store, v.features["features"]["uri"]))
    assert len(features) == 8
    unlabelled = pd.DataFrame(features[features["stem"].isin(pool["stem"])])
    assert bool(unlabelled["n_boxes"].isna().all()) and bool(unlabelled["brightness"].notna().all())
    # The blocking acceptance check counts images taken in, labelled or not.
    assert v.result.acceptance_rate == 1.0 and v.validated.get("acceptance_ok")


def test_the_same_images_in_a_full_batch_are_missing_labels(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 4, seed=1, size=64)
    (b.path / "labels" / "batch-0000_00002.txt").unlink()
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 4, "accepted": 3, "unlabelled": 0, "quarantined": 1}
    (q,) = v.result.quarantine
    assert q["rule"] == "missing_label" and "labels/batch-0000_00002.txt" in q["reason"]


def test_an_unlabelled_batch_then_its_labels_label_the_pool_and_a_repeat_is_a_duplicate(
    tmp_path,
):
    (b,) = write_batches(tmp_path / "landing", 1, 3, seed=2, size=64, prefix="frames")
    labels = tmp_path / "kept"
    shutil.move(b.path / "labels", labels)
    _marker(b.path, labels="none")
    store = ArtifactStore(str(tmp_path / "artifacts"))
    first = _validate(tmp_path, b.batch_id, store)
    assert first.counts == {"landed": 3, "accepted": 0, "unlabelled": 3, "quarantined": 0}
    # The same frames come back labelled: they label the pool, naming what they supersede.
    again = tmp_path / "landing" / "labelled-0000"
    shutil.copytree(b.path, again)
    shutil.copytree(labels, again / "labels")
    _marker(again, batch_id="labelled-0000", labels="full")
    second = _validate(tmp_path, "labelled-0000", store)
    assert second.counts == {"landed": 3, "accepted": 3, "unlabelled": 0, "quarantined": 0}
    samples = _table(store, second.validated["samples"])
    assert all(s.startswith("frames-0000/images/") for s in samples["supersedes"])
    # A third landing of the same frames, unlabelled, adds nothing.
    third = tmp_path / "landing" / "repeat-0000"
    shutil.copytree(b.path, third)
    _marker(third, batch_id="repeat-0000")
    repeat = _validate(tmp_path, "repeat-0000", store)
    assert repeat.counts == {"landed": 3, "accepted": 0, "unlabelled": 0, "quarantined": 3}
    assert {q["rule"] for q in repeat.result.quarantine} == {"duplicate_image"}


def _to_ultralytics(batch: Path, names: list[str]) -> None:
    """The batch as an Ultralytics dataset: split folders, ids indexing ``names``."""
    for sub in ("images", "labels"):
        (batch / sub / "train").mkdir()
        for f in sorted((batch / sub).glob("*.*")):
            f.rename(batch / sub / "train" / f.name)
    for f in (batch / "labels" / "train").glob("*.txt"):
        rows = [line.split() for line in f.read_text().splitlines() if line.strip()]
        f.write_text("".join(
            f"{names.index(CLASSES[int(r[0])])} {' '.join(r[1:])}\n" for r in rows
        ))  # fmt: skip
    (batch / "data.yaml").write_text(
        "path: .\ntrain: images/train\nnames:\n" + "".join(f"  - {n}\n" for n in names)
    )
    _marker(batch, format="ultralytics", classes=names)


def test_an_ultralytics_dataset_maps_its_class_ids_by_name(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 5, seed=3, size=64)
    truth = {
        f.stem: f.read_text() for f in (b.path / "labels").glob("*.txt")
    }  # the platform's ids, as the generator wrote them
    names = ["triangle", "person", "square", "circle"]  # another order, one class more
    _to_ultralytics(b.path, names)
    label = b.path / "labels" / "train" / "batch-0000_00000.txt"
    label.write_text(label.read_text() + f"{names.index('circle')} 0.1 0.1 0.3 0.1 0.2 0.4\n")
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 5, "accepted": 5, "unlabelled": 0, "quarantined": 0}
    store = ArtifactStore(str(tmp_path / "artifacts"))
    samples = _table(store, v.validated["samples"]).set_index("stem")
    for stem, text in truth.items():
        got = _local(store, str(samples.loc[stem, "label_uri"])).read_text()
        expected = text + ("1 0.200000 0.250000 0.200000 0.300000\n" if stem.endswith("0") else "")
        assert got == expected, stem
    assert samples.loc["batch-0000_00000", "converted_boxes"] == 1
    assert set(samples["label_source"]) == {"import:ultralytics"}
    assert v.result.annotations["annotation_files"] == 6  # data.yaml and five label files


def test_an_ultralytics_dataset_without_data_yaml_cannot_name_its_ids(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 2, seed=3, size=64)
    _to_ultralytics(b.path, list(CLASSES))
    (b.path / "data.yaml").unlink()
    v = _validate(tmp_path, b.batch_id)
    rules = sorted(q["rule"] for q in v.result.quarantine)
    assert rules == ["bad_annotation_file"] * 2 + ["missing_label"] * 2
    assert all(
        "data.yaml" in q["reason"] for q in v.result.quarantine[:2] if "labels/" in q["item"]
    )
    assert v.counts["landed"] == 4 and v.counts["accepted"] == 0


def test_a_model_proposed_label_trains_and_never_validates_or_tests():
    rows = [
        {"stem": f"s{i}", "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
         "label_sha256": "x", "image_uri": f"u{i}", "label_uri": f"l{i}", "class_ids": "0",
         "label_source": src}
        for i, src in enumerate(["model:3"] * 60 + ["human"] * 60)
    ]  # fmt: skip
    snap = build_snapshot([("b", pd.DataFrame(rows))], CLASSES)
    model = snap.samples[snap.samples["label_source"] == "model:3"]
    human = snap.samples[snap.samples["label_source"] == "human"]
    assert set(model["split"]) == {"train"}
    assert {"val", "test"} <= set(human["split"])
    # A table from before provenance existed counts as people's labels.
    old = build_snapshot([("b", pd.DataFrame(rows).drop(columns="label_source"))], CLASSES)
    assert set(old.samples["label_source"]) == {"human"}


@pytest.mark.parametrize("fmt", ["ultralytics", "coco", "voc", "cvat", "labelstudio"])
def test_every_format_lands_through_intake_with_its_unlabelled_images_in_the_pool(tmp_path, fmt):
    (b,) = write_batches(
        tmp_path / "landing", 1, 10, seed=7, size=96, fmt=fmt, unlabelled_fraction=0.3
    )
    (y,) = write_batches(tmp_path / "yolo", 1, 10, seed=7, size=96, unlabelled_fraction=0.3)
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 10, "accepted": 7, "unlabelled": 3, "quarantined": 0}
    assert v.validated.get("format") == fmt and v.validated.get("labels") == "partial"
    assert v.result.annotations["annotations_quarantined"] == 0
    store = ArtifactStore(str(tmp_path / "artifacts"))
    samples = _table(store, v.validated["samples"]).set_index("stem")
    assert set(samples["label_source"]) == {f"import:{fmt}"}
    # The stored labels are the YOLO batch's own, byte for byte: the same generator, same seed.
    for f in (y.path / "labels").glob("*.txt"):
        stored = _local(store, str(samples.loc[f.stem, "label_uri"]))
        assert stored.read_text() == f.read_text(), (fmt, f.stem)
    # The original annotation files stay with the raw copy.
    raw = store.local_path(f"raw/{b.batch_id}/files")
    assert raw is not None
    kept = {p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file()}
    landed = {p.relative_to(b.path).as_posix() for p in b.path.rglob("*") if p.is_file()}
    assert kept == landed


def test_a_coco_file_that_does_not_parse_is_quarantined_and_its_images_are_unlabelled(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 4, seed=8, size=64, fmt="coco")
    (b.path / "annotations" / "instances.json").write_text('{"images": [')
    _marker(b.path, labels="partial")
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 5, "accepted": 0, "unlabelled": 4, "quarantined": 1}
    (q,) = v.result.quarantine
    assert q["rule"] == "bad_annotation_file" and "annotations/instances.json" in q["reason"]


def test_a_wrong_declared_size_quarantines_the_image_and_a_broken_box_sends_it_to_the_pool(
    tmp_path,
):
    (b,) = write_batches(tmp_path / "landing", 1, 3, seed=9, size=64, fmt="coco")
    path = b.path / "annotations" / "instances.json"
    doc = json.loads(path.read_text())
    doc["images"][0]["width"] = 80  # not the image's 64 px
    first_of_second = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][1]["id"])
    first_of_second["bbox"] = [10, 10, -5, 4]  # a negative width: that object has no box
    path.write_text(json.dumps(doc))
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 3, "accepted": 1, "unlabelled": 1, "quarantined": 1}
    (q,) = v.result.quarantine
    assert q["rule"] == "annotation_size_mismatch" and "declares 80x64" in q["reason"]
    store = ArtifactStore(str(tmp_path / "artifacts"))
    (why,) = _table(store, v.validated.get("unlabelled_table"))["why"]
    assert "bad_box" in why and "not trained on" in why
    problems = _table(store, v.validated.get("annotation_problems"))
    assert list(problems["rule"]) == ["bad_box"] and "annotation id" in problems["reason"][0]


def test_batch_json_format_and_labels_are_checked_and_only_yolo_ids_need_the_class_order():
    from cv_assets.lib.ingest.landing import BatchRefused, parse_marker

    def marker(**fields) -> bytes:
        return json.dumps({"batch_id": "b", "classes": list(CLASSES)} | fields).encode()

    with pytest.raises(BatchRefused, match=r"format \"pascal\" is not one of yolo, ultralytics"):
        parse_marker("b", marker(format="pascal"), CLASSES)
    with pytest.raises(BatchRefused, match=r"labels \"some\" is not one of full, partial, none"):
        parse_marker("b", marker(labels="some"), CLASSES)
    reordered = list(reversed(CLASSES))
    with pytest.raises(BatchRefused, match="disagree with the platform's class list"):
        parse_marker("b", marker(classes=reordered), CLASSES)
    # A COCO batch names its classes: another order (or more classes) is the adapter's business.
    assert parse_marker("b", marker(classes=reordered, format="coco"), CLASSES)["format"] == "coco"


def test_a_polygon_line_among_boxes_in_a_yolo_file_quarantines_it_naming_the_line(tmp_path):
    (b,) = write_batches(tmp_path / "landing", 1, 2, seed=5, size=64)
    label = b.path / "labels" / "batch-0000_00000.txt"
    lines = label.read_text().splitlines()
    label.write_text("\n".join([lines[0], "1 0.1 0.1 0.3 0.1 0.2 0.4", *lines[1:]]) + "\n")
    v = _validate(tmp_path, b.batch_id)
    assert v.counts == {"landed": 2, "accepted": 1, "unlabelled": 0, "quarantined": 1}
    (q,) = v.result.quarantine
    assert q["rule"] == "wrong_columns"
    assert q["reason"].startswith("labels/batch-0000_00000.txt:2: expected 5 columns")
