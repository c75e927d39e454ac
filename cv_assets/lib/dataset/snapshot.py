"""Versioned training datasets: a snapshot of every accepted sample, split by content hash.

The split of an image is a pure function of its sha256, so adding data never moves an image from
one split to another, and the frozen test split only ever grows by new images. A dataset's version
is the hash of its manifest (every sample's image and label hash and split), so the same accepted
data always gives the same version, and any change to an image or a label gives a new one.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.ingest.formats.base import HUMAN, human_verified
from cv_assets.lib.ingest.records import ValidatedBatch

SPLITS = ("train", "val", "test")


def stable_split(sha256: str, train: int = 80, val: int = 10) -> str:
    """``train``/``val``/``test`` from the image's content hash (80/10/10 by default)."""
    bucket = int(sha256[:8], 16) % 100
    return "train" if bucket < train else "val" if bucket < train + val else "test"


@dataclass
class DatasetSnapshot:
    version: str
    samples: pd.DataFrame  # one row per accepted image, with its split
    classes: list[str]
    batches: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    superseded: int = 0  # accepted labels replaced by a reviewed correction

    def split_paths(self, split: str, local_path: Any = None) -> list[str]:
        uris = self.samples.loc[self.samples["split"] == split, "image_uri"].tolist()
        return [local_path(u) if local_path else u for u in uris]


def build_snapshot(
    batch_tables: Iterable[tuple[str, pd.DataFrame]], classes: Sequence[str]
) -> DatasetSnapshot:
    """One snapshot from the accepted-samples table of each batch.

    An image accepted by two batches is kept once. A correction (a row of a review batch, with
    ``supersedes`` set) replaces the image's earlier rows, the newest correction (``corrected_at``,
    then batch id) winning; otherwise the row of the batch listed first is kept.
    """
    frames, batches = [], []
    for batch_id, df in batch_tables:
        if len(df):
            frames.append(df.assign(batch_id=batch_id))
        batches.append(batch_id)
    cols = ["batch_id", "stem", "sha256", "label_sha256", "image_uri", "label_uri", "class_ids"]
    all_samples = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in cols})
    )
    all_samples, superseded = _latest_labels(all_samples)
    all_samples = all_samples.sort_values("sha256", ignore_index=True)
    # Tables written before provenance existed hold only labels people drew.
    source = _text_column(all_samples, "label_source").replace("", HUMAN)
    all_samples["label_source"] = source
    cols.append("label_source")
    # Validation and test hold only labels a person made or checked: a model's proposal trains.
    all_samples["split"] = [
        stable_split(s) if human_verified(src) else "train"
        for s, src in zip(all_samples["sha256"], source, strict=True)
    ]
    body = list(
        zip(all_samples["sha256"], all_samples["label_sha256"], all_samples["split"], strict=True)
    )
    version = hashlib.sha256(json.dumps([list(classes), body]).encode()).hexdigest()[:16]
    counts = {s: int((all_samples["split"] == s).sum()) for s in SPLITS}
    class_counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c: Counter[str] = Counter()
        for ids in all_samples.loc[all_samples["split"] == split, "class_ids"]:
            c.update(classes[int(i)] for i in str(ids).split())
        class_counts[split] = {name: c.get(name, 0) for name in classes}
    return DatasetSnapshot(
        version=version,
        samples=pd.DataFrame(all_samples[[*cols, "split"]]),
        classes=list(classes),
        batches=sorted(batches),
        counts=counts,
        class_counts=class_counts,
        superseded=superseded,
    )


def _text_column(df: pd.DataFrame, name: str) -> pd.Series:
    """A text column, empty where the table predates it (written before corrections existed)."""
    if name not in df.columns:
        return pd.Series("", index=df.index, dtype=str)
    return pd.Series(df[name], index=df.index).fillna("").astype(str)


def _latest_labels(samples: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per image sha256, corrections winning; and how many rows they replaced."""
    fix = _text_column(samples, "supersedes") != ""
    originals = pd.DataFrame(samples[~fix]).drop_duplicates(subset=["sha256"])
    fixes = pd.DataFrame(samples.assign(_at=_text_column(samples, "corrected_at"))[fix])
    fixes = fixes.sort_values(["_at", "batch_id"], kind="stable").drop_duplicates(
        subset=["sha256"], keep="last"
    )
    merged = pd.concat([originals, fixes.drop(columns="_at")], ignore_index=True)
    kept = merged.drop_duplicates(subset=["sha256"], keep="last")
    return kept, int(originals["sha256"].isin(fixes["sha256"]).sum())


def data_yaml(classes: Sequence[str], root: str) -> str:
    """An Ultralytics data.yaml that points at file lists, so no image is copied."""
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(classes))
    return f"path: {root}\ntrain: train.txt\nval: val.txt\ntest: test.txt\nnames:\n{names}\n"


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


class EmptyDataset(ValueError):
    """No batch has an accepted sample yet."""


@dataclass
class PublishedDataset:
    """A snapshot written to the store, and the record that names it."""

    snapshot: DatasetSnapshot
    record: TrainingDataset
    table: bytes  # the samples table, as Parquet
    samples: ArtifactRef
    data_yaml: ArtifactRef

    def boxes_by_class_md(self) -> str:
        snap = self.snapshot
        return md_table(
            [(c, *(snap.class_counts[s][c] for s in SPLITS)) for c in snap.classes],
            ["class", "train boxes", "val boxes", "test boxes"],
        )


def publish_snapshot(
    store: ArtifactStore, validated: Mapping[str, ValidatedBatch], classes: Sequence[str]
) -> PublishedDataset:
    """Snapshot every batch that passed its acceptance check and write it under its version:
    the samples table, one file list per split and an Ultralytics data.yaml.

    Raises ``EmptyDataset`` when no usable batch has an accepted sample.
    """
    usable = {b: r for b, r in validated.items() if r.get("acceptance_ok", True)}
    tables = [
        (b, pd.read_parquet(io.BytesIO(store.verify(r["samples"]))))
        for b, r in sorted(usable.items())
    ]
    snap = build_snapshot(tables, classes)
    if snap.samples.empty:
        raise EmptyDataset("no accepted samples yet: land and validate a batch first")
    table = parquet_bytes(snap.samples)
    samples = store.put_bytes(layout.dataset_samples(snap.version), table)
    for split in SPLITS:
        store.put_bytes(
            layout.dataset_split_list(snap.version, split),
            ("\n".join(snap.split_paths(split)) + "\n").encode(),
        )
    root = store.uri(layout.dataset_prefix(snap.version))
    yaml_ref = store.put_bytes(
        layout.dataset_yaml(snap.version), data_yaml(snap.classes, root).encode()
    )
    record: TrainingDataset = {
        "version": snap.version,
        "classes": snap.classes,
        "batches": snap.batches,
        "excluded_batches": sorted(set(validated) - set(usable)),
        "counts": snap.counts,
        "class_counts": snap.class_counts,
        "images": len(snap.samples),
        "samples": samples.as_dict(),
        "data_yaml": yaml_ref.as_dict(),
        "data_yaml_key": layout.dataset_yaml(snap.version),
    }
    return PublishedDataset(snap, record, table, samples, yaml_ref)


class DatasetTooSmall(ValueError):
    pass


def check_trainable(counts: dict[str, int], minimum: dict[str, int], version: str) -> None:
    """Refuse, in words, a dataset that Ultralytics would crash on or learn nothing from."""
    short = [
        f"{s} {counts.get(s, 0)} < {minimum[s]}" for s in SPLITS if counts.get(s, 0) < minimum[s]
    ]
    if short:
        raise DatasetTooSmall(
            f"dataset {version} is too small to train on: {', '.join(short)} images "
            f"(train/val/test = {counts.get('train', 0)}/{counts.get('val', 0)}/"
            f"{counts.get('test', 0)}). Land more batches, or lower yolo_model's "
            "min_train_images, min_val_images or min_test_images."
        )


def test_split(
    store: ArtifactStore, dataset: TrainingDataset, cache: Path, split: str = "test"
) -> tuple[list[str], list[str]]:
    """Local image and label paths of one split of a dataset version (the frozen test set)."""
    samples = pd.read_parquet(local_file(store, dataset["samples"]["uri"], cache))
    rows = pd.DataFrame(samples[samples["split"] == split]).sort_values(by="sha256")
    images = [str(local_file(store, u, cache)) for u in rows["image_uri"]]
    labels = [str(local_file(store, u, cache)) for u in rows["label_uri"]]
    return images, labels


def held_out_of_batches(
    store: ArtifactStore, dataset: TrainingDataset, batches: Sequence[str], cache: Path
) -> tuple[list[str], list[str]]:
    """Local image and label paths of the given batches' val and test rows: images that the
    challenger did not train on (its dataset's split is a pure function of each image)."""
    samples = pd.read_parquet(local_file(store, dataset["samples"]["uri"], cache))
    keep = samples["batch_id"].isin(list(batches)) & (samples["split"] != "train")
    rows = pd.DataFrame(samples[keep]).sort_values(by="sha256")
    images = [str(local_file(store, u, cache)) for u in rows["image_uri"]]
    labels = [str(local_file(store, u, cache)) for u in rows["label_uri"]]
    return images, labels
