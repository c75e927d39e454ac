import hashlib

import pandas as pd
import pytest

from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.snapshot import (
    DatasetTooSmall,
    EmptyDataset,
    build_snapshot,
    check_trainable,
    data_yaml,
    parquet_bytes,
    publish_snapshot,
    stable_split,
)
from cv_assets.lib.ingest.records import ValidatedBatch

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]


def samples(n: int, start: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(start, start + n):
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append(
            {
                "stem": f"s{i}",
                "sha256": sha,
                "label_sha256": sha[::-1],
                "image_uri": f"/x/images/s{i}.jpg",
                "label_uri": f"/x/labels/s{i}.txt",
                "class_ids": "0 1" if i % 2 else "2",
            }
        )
    return pd.DataFrame(rows)


def test_split_is_roughly_80_10_10_and_a_pure_function_of_the_hash():
    splits = [stable_split(hashlib.sha256(str(i).encode()).hexdigest()) for i in range(5000)]
    share = {s: splits.count(s) / 5000 for s in ("train", "val", "test")}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["val"] < 0.12
    assert 0.08 < share["test"] < 0.12


def test_adding_data_never_moves_an_image_between_splits():
    small = build_snapshot([("b1", samples(200))], CLASSES)
    big = build_snapshot([("b1", samples(200)), ("b2", samples(300, start=200))], CLASSES)
    before = dict(zip(small.samples["sha256"], small.samples["split"], strict=True))
    after = dict(zip(big.samples["sha256"], big.samples["split"], strict=True))
    assert all(after[sha] == split for sha, split in before.items())
    assert small.version != big.version


def test_version_is_stable_and_changes_when_a_label_changes():
    a = build_snapshot([("b1", samples(50))], CLASSES)
    b = build_snapshot([("b1", samples(50))], CLASSES)
    assert a.version == b.version
    changed = samples(50)
    changed.loc[3, "label_sha256"] = "0" * 64
    assert build_snapshot([("b1", changed)], CLASSES).version != a.version


def test_counts_per_split_and_per_class():
    snap = build_snapshot([("b1", samples(100))], CLASSES)
    assert sum(snap.counts.values()) == 100
    boxes = sum(sum(c.values()) for c in snap.class_counts.values())
    assert boxes == 50 * 2 + 50 * 1
    assert snap.class_counts["train"]["triangle"] > 0


def test_data_yaml_points_at_file_lists():
    text = data_yaml(CLASSES, "/data/v1")
    assert "train: train.txt" in text and "  2: triangle" in text and "path: /data/v1" in text


def test_too_small_dataset_is_refused_with_counts():
    with pytest.raises(DatasetTooSmall, match=r"val 1 < 2.*train/val/test = 20/1/3"):
        check_trainable(
            {"train": 20, "val": 1, "test": 3}, {"train": 16, "val": 2, "test": 2}, "v9"
        )


def corrections(base: pd.DataFrame, rows: list[int], label: str, at: str) -> pd.DataFrame:
    fix = base.iloc[rows].copy()
    fix["label_sha256"] = label * 64
    fix["class_ids"] = "1"
    fix["supersedes"] = [f"b1/images/{s}.jpg" for s in fix["stem"]]
    fix["corrected_at"] = at
    return fix.reset_index(drop=True)


def test_newest_correction_replaces_the_label_and_the_version_is_its_content():
    base = samples(20)
    old = corrections(base, [0, 1], "a", "2030-01-01T00:00:00+00:00")
    new = corrections(base, [1], "b", "2030-02-01T00:00:00+00:00")
    tables = [("b1", base), ("fix-2", new), ("fix-1", old)]  # listed out of time order
    snap = build_snapshot(tables, CLASSES)
    labels = dict(zip(snap.samples["sha256"], snap.samples["label_sha256"], strict=True))
    batch = dict(zip(snap.samples["sha256"], snap.samples["batch_id"], strict=True))
    sha0, sha1 = base.loc[0, "sha256"], base.loc[1, "sha256"]
    assert labels[sha0] == "a" * 64 and labels[sha1] == "b" * 64
    assert batch[sha1] == "fix-2" and len(snap.samples) == 20 and snap.superseded == 2
    assert build_snapshot(list(reversed(tables)), CLASSES).version == snap.version
    # The same content reached without any correction has the same version.
    direct = base.copy()
    direct.loc[0, "label_sha256"], direct.loc[1, "label_sha256"] = "a" * 64, "b" * 64
    assert build_snapshot([("b1", direct)], CLASSES).version == snap.version
    assert build_snapshot([("b1", base)], CLASSES).superseded == 0


def _validated(store: ArtifactStore, bid: str, table: pd.DataFrame, ok: bool) -> ValidatedBatch:
    ref = store.put_bytes(layout.validated_table(bid, "samples"), parquet_bytes(table))
    empty = store.put_bytes(layout.validated_table(bid, "quarantine"), b"")
    return {
        "batch_id": bid,
        "manifest_sha256": "m" * 64,
        "samples": ref.as_dict(),
        "quarantine": empty.as_dict(),
        "images_prefix": f"std/{bid}/images",
        "classes": CLASSES,
        "acceptance_ok": ok,
        "landed": len(table),
        "accepted": len(table),
        "quarantined": 0,
    }


def test_published_snapshot_leaves_out_failed_batches_and_writes_its_split_lists(tmp_path):
    store = ArtifactStore(str(tmp_path))
    validated = {
        "b1": _validated(store, "b1", samples(40), ok=True),
        "b2": _validated(store, "b2", samples(30, start=40), ok=False),
    }
    out = publish_snapshot(store, validated, CLASSES)
    rec = out.record
    assert rec["batches"] == ["b1"] and rec["excluded_batches"] == ["b2"]
    assert rec["images"] == 40 == sum(rec["counts"].values())
    assert store.verify(rec["samples"]) == out.table
    for split, n in rec["counts"].items():
        lines = store.get_bytes(layout.dataset_split_list(rec["version"], split)).decode()
        assert len(lines.split()) == n
    assert store.exists(rec["data_yaml_key"])
    assert "| square |" in out.boxes_by_class_md()


def test_a_snapshot_of_no_accepted_sample_is_refused(tmp_path):
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(EmptyDataset, match="no accepted samples yet"):
        publish_snapshot(store, {"b1": _validated(store, "b1", samples(5), ok=False)}, CLASSES)
