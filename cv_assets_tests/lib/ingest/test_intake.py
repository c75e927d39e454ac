import io
import json
import os
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.intake import ingest_batch
from cv_assets.lib.ingest.landing import LandingZone, Manifest, ManifestEntry
from cv_assets.lib.ingest.raw import DedupIndex, copy_raw_batch, load_raw_manifest
from cv_assets.lib.ingest.sources import plan_items
from cv_assets.lib.synth.batches import CLASSES, FAULT_KINDS, write_batches
from cv_assets_tests.support.landing import EXPECTED_RULE

pytestmark = pytest.mark.unit


def ingest(tmp_path: Path, batch_id: str, store: ArtifactStore | None = None, **kw):
    store = store or ArtifactStore(str(tmp_path / "artifacts"))
    zone = LandingZone(str(tmp_path / "landing"))
    rec = copy_raw_batch(zone, store, batch_id, CLASSES)
    manifest = load_raw_manifest(store, batch_id)
    assert manifest is not None
    dedup = DedupIndex(store)
    res = ingest_batch(
        batch_id,
        manifest,
        read=lambda rel: store.get_bytes(f"{rec['files_key']}/{rel}"),
        write=lambda key, data: store.put_bytes(f"std/{batch_id}/{key}", data).uri,
        link=lambda rel, key: store.copy(f"{rec['files_key']}/{rel}", f"std/{batch_id}/{key}"),
        seen=dedup.seen_before(batch_id),
        classes=CLASSES,
        limits=kw.pop("limits", ImageLimits()),
    )
    dedup.record(batch_id, {s["sha256"]: s["source"] for s in res.samples})
    return res, store


def test_every_fault_kind_is_quarantined_with_its_rule_and_nothing_is_lost(tmp_path):
    (s,) = write_batches(
        tmp_path / "landing", 1, 40, seed=3, size=96, corrupt_fraction=0.5, quirk_fraction=0.2
    )
    res, _ = ingest(tmp_path, s.batch_id)
    assert set(s.faults.values()) == set(FAULT_KINDS)
    by_stem = {q["stem"]: q for q in res.quarantine}
    for path, kind in s.faults.items():
        q = by_stem[PurePosixPath(path).stem]
        assert q["rule"] == EXPECTED_RULE[kind], (path, q)
        # The reason names the offending file itself (escaped when its name is unprintable).
        assert path in q["reason"] or repr(path)[1:-1] in q["reason"], (path, q)
    assert res.accepted + len(res.quarantine) == res.landed == s.files_landed
    assert len(res.quarantine) == len(s.faults)


def test_quirky_but_valid_files_are_accepted(tmp_path):
    (s,) = write_batches(tmp_path / "landing", 1, 12, seed=4, size=96, quirk_fraction=0.5)
    res, _store = ingest(tmp_path, s.batch_id)
    assert sorted(s.quirks.values()).count("upper_ext") >= 1
    accepted = {r["source"] for r in res.samples}
    for path, kind in s.quirks.items():
        stem = PurePosixPath(path).stem
        assert any(PurePosixPath(a).stem == stem for a in accepted), (path, kind)
    assert res.quarantine == []
    # Standard form: every accepted label is LF-only without a BOM.
    for r in res.samples:
        raw = Path(r["label_uri"]).read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw
        assert r["image_uri"].endswith(".jpg")


def test_image_already_accepted_in_an_earlier_batch_is_a_duplicate(tmp_path):
    a, b = write_batches(tmp_path / "landing", 2, 6, seed=5, size=96)
    stem = sorted((a.path / "images").iterdir())[0]
    copy = b.path / "images" / "copied_from_a.jpg"
    copy.write_bytes(stem.read_bytes())
    (b.path / "labels" / "copied_from_a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    _, store = ingest(tmp_path, a.batch_id)
    res, _ = ingest(tmp_path, b.batch_id, store=store)
    (dup,) = [q for q in res.quarantine if q["rule"] == "duplicate_image"]
    assert dup["item"] == "images/copied_from_a.jpg"
    assert f"{a.batch_id}/images/{stem.name}" in dup["reason"]
    # Re-validating the earlier batch does not turn its own images into duplicates.
    again, _ = ingest(tmp_path, a.batch_id, store=store)
    assert again.quarantine == [] and again.accepted == 6


def test_stray_and_same_stem_files_are_quarantined_not_dropped(tmp_path):
    (s,) = write_batches(tmp_path / "landing", 1, 4, seed=6, size=96)
    (s.path / "notes.txt").write_text("hello")
    (s.path / "images" / "nested").mkdir()
    (s.path / "images" / "nested" / "x.jpg").write_bytes(b"abc")
    first = sorted((s.path / "images").glob("*.jpg"))[0]
    (s.path / "images" / f"{first.stem}.png").write_bytes(first.read_bytes())
    (s.path / "images" / ".DS_Store").write_bytes(b"\0")
    res, _ = ingest(tmp_path, s.batch_id)
    rules = {q["item"]: q["rule"] for q in res.quarantine}
    assert rules["notes.txt"] == "unexpected_file"
    assert rules["images/nested/x.jpg"] == "unexpected_file"
    assert rules[f"images/{first.stem}.png"] == "unexpected_file"
    assert rules["images/.DS_Store"] == "non_portable_name"
    assert res.accepted == 4 and res.landed == 8


def test_image_over_the_size_limit_is_quarantined(tmp_path):
    (s,) = write_batches(tmp_path / "landing", 1, 3, seed=7, size=96)
    res, _ = ingest(tmp_path, s.batch_id, limits=ImageLimits(max_bytes=100))
    assert {q["rule"] for q in res.quarantine} == {"too_large"}


def test_path_traversal_in_an_object_key_is_quarantined():
    # On S3 a key may contain "..": the plan must refuse it as a name, never resolve it.
    m = Manifest(
        "b",
        {"classes": list(CLASSES)},
        [
            ManifestEntry("images/../../etc/passwd.jpg", "file", 10, "0" * 64),
            ManifestEntry("labels/../../etc/passwd.txt", "file", 10, "1" * 64),
        ],
    )
    items = plan_items(m)
    assert [i.kind for i in items] == ["stray", "stray"]
    res = ingest_batch(
        "b",
        m,
        read=lambda r: b"",
        write=lambda k, d: k,
        seen={},
        classes=CLASSES,
        limits=ImageLimits(),
    )
    assert {q["rule"] for q in res.quarantine} == {"non_portable_name"}


def test_symlinks_are_recorded_but_never_copied(tmp_path):
    (s,) = write_batches(tmp_path / "landing", 1, 20, seed=8, size=96, corrupt_fraction=0.75)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    copy_raw_batch(LandingZone(str(tmp_path / "landing")), store, s.batch_id, CLASSES)
    links = [p for p, k in s.faults.items() if k == "symlink"]
    assert links
    for p in links:
        assert os.path.islink(s.path / p)
        assert not store.exists(f"raw/{s.batch_id}/files/{p}")
    manifest = json.loads(store.get_bytes(f"raw/{s.batch_id}/manifest.json"))
    kinds = {f["path"]: f["kind"] for f in manifest["files"]}
    assert all(kinds[p] == "symlink" for p in links)


def test_features_have_one_row_per_accepted_image_with_class_statistics(tmp_path):
    (s,) = write_batches(tmp_path / "landing", 1, 8, seed=9, size=128)
    res, _ = ingest(tmp_path, s.batch_id)
    df = pd.DataFrame(res.features)
    assert len(df) == res.accepted == 8
    for col in [
        "brightness",
        "contrast",
        "sharpness",
        "width",
        "height",
        "n_boxes",
        "n_square",
        "area_circle",
        "aspect_triangle",
        "box_area_mean",
    ]:
        assert col in df.columns
    assert bool((df["n_boxes"] == df[[f"n_{c}" for c in CLASSES]].sum(axis=1)).all())
    assert bool(df["width"].eq(128).all())


def test_review_batch_relabels_images_seen_before_instead_of_quarantining_them(tmp_path):
    (a,) = write_batches(tmp_path / "landing", 1, 4, seed=10, size=96)
    _, store = ingest(tmp_path, a.batch_id)
    review = tmp_path / "landing" / "fix-1"
    (review / "images").mkdir(parents=True)
    (review / "labels").mkdir()
    originals = sorted((a.path / "images").iterdir())[:2]
    for img in originals:
        (review / "images" / img.name).write_bytes(img.read_bytes())
        (review / "labels" / f"{img.stem}.txt").write_text("2 0.5 0.5 0.25 0.25\n")
    marker = {"batch_id": "fix-1", "classes": list(CLASSES), "created_at": "2030-01-01T00:00:00Z"}
    (review / "batch.json").write_text(json.dumps(marker | {"source": f"review:{a.batch_id}"}))
    res, _ = ingest(tmp_path, "fix-1", store=store)
    assert res.quarantine == [] and res.accepted == 2
    rows = {r["stem"]: r for r in res.samples}
    for img in originals:
        row = rows[img.stem]
        assert row["supersedes"] == f"{a.batch_id}/images/{img.name}"
        assert row["corrected_at"] == "2030-01-01T00:00:00Z" and row["class_ids"] == "2"


def test_hostile_names_are_quarantined_escaped_and_the_tables_can_be_written(tmp_path):
    from cv_assets.lib.ingest.intake import QUARANTINE_COLUMNS, table_bytes

    (s,) = write_batches(tmp_path / "landing", 1, 3, seed=11, size=96)
    jpg = sorted((s.path / "images").iterdir())[0].read_bytes()
    images, labels = os.fsencode(s.path / "images"), os.fsencode(s.path / "labels")
    with open(os.path.join(images, b"\xff\xfe.jpg"), "wb") as f:  # not UTF-8 (bytes path)
        f.write(jpg)
    with open(os.path.join(labels, b"\xff\xfe.txt"), "wb") as f:
        f.write(b"0 0.5 0.5 0.1 0.1\n")
    long_stem = "n" * 240  # legal on Linux (255 bytes), over the platform's 200
    (s.path / "images" / f"{long_stem}.jpg").write_bytes(jpg)
    (s.path / "labels" / f"{long_stem}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    res, _ = ingest(tmp_path, s.batch_id)
    rows = {q["rule"]: q for q in res.quarantine}
    assert set(rows) == {"undecodable_name", "name_too_long"}
    assert rows["undecodable_name"]["item"] == "images/\\xff\\xfe.jpg"
    assert rows["undecodable_name"]["reason"].startswith("images/\\xff\\xfe.jpg: ")
    assert rows["name_too_long"]["item"] == f"images/{long_stem}.jpg"
    assert "limits are 200 a part" in rows["name_too_long"]["reason"]
    assert res.accepted == 3 and res.landed == 5
    df = pd.read_parquet(io.BytesIO(table_bytes(res.quarantine, QUARANTINE_COLUMNS)))
    assert "images/\\xff\\xfe.jpg" in set(df["item"])


def test_label_files_over_the_limits_are_quarantined_before_parsing(tmp_path):
    import time

    from cv_assets.lib.ingest.labels import LabelLimits

    (s,) = write_batches(tmp_path / "landing", 1, 4, seed=12, size=96)
    labels = sorted((s.path / "labels").iterdir())
    # 50 MB, 2.9 million boxes (used to take ~26 s to parse and validate), and 20,000 boxes.
    line = b"0 0.5 0.5 0.1 0.1\n"
    labels[0].write_bytes(line * (50_000_000 // len(line)))
    labels[1].write_bytes(line * 20_000)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    zone = LandingZone(str(tmp_path / "landing"))
    rec = copy_raw_batch(zone, store, s.batch_id, CLASSES)
    manifest = load_raw_manifest(store, s.batch_id)
    assert manifest is not None
    t0 = time.perf_counter()
    res = ingest_batch(
        s.batch_id,
        manifest,
        read=lambda rel: store.get_bytes(f"{rec['files_key']}/{rel}"),
        write=lambda key, data: store.put_bytes(f"std/{key}", data).uri,
        seen={},
        classes=CLASSES,
        limits=ImageLimits(),
        label_limits=LabelLimits(),
    )
    assert time.perf_counter() - t0 < 3.0
    by_item = {q["item"]: q for q in res.quarantine}
    big = by_item[f"images/{labels[0].stem}.jpg"]
    assert big["rule"] == "label_too_large"
    assert big["reason"] == (
        f"labels/{labels[0].name}: 49,999,986 bytes exceeds the label file limit of 1,048,576 "
        "(max_label_bytes); not parsed"
    )
    crowd = by_item[f"images/{labels[1].stem}.jpg"]
    assert crowd["rule"] == "too_many_boxes"
    assert crowd["reason"].startswith(f"labels/{labels[1].name}: 20,000 boxes, more than the limit")
    assert res.accepted == 2 and len(res.quarantine) == 2
