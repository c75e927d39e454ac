"""Validation of one raw batch, end to end: read its manifest, ingest every file against the
duplicate index, and write the samples, quarantine and feature tables to the store.

``validated_batch`` and ``batch_features`` are two faces of this one pass; the asset only turns
what it returns into Dagster metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cv_assets.lib.core import layout
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.intake import (
    ANNOTATION_PROBLEM_COLUMNS,
    QUARANTINE_COLUMNS,
    SAMPLE_COLUMNS,
    UNLABELLED_COLUMNS,
    IngestResult,
    ingest_batch,
    table_bytes,
)
from cv_assets.lib.ingest.labels import LabelLimits
from cv_assets.lib.ingest.landing import BatchRefused, Manifest, clip
from cv_assets.lib.ingest.raw import DedupIndex
from cv_assets.lib.ingest.records import BatchFeatures, RawBatch, ValidatedBatch
from cv_assets.lib.ingest.sources import BatchFormat


class ItemsLost(RuntimeError):
    """Some landed item ended up neither accepted nor quarantined: never silently lose one."""


@dataclass
class Validation:
    """What one validation wrote, and the records it hands downstream."""

    result: IngestResult
    validated: ValidatedBatch
    features: BatchFeatures
    counts: dict[str, int]  # landed, accepted, unlabelled, quarantined
    tables: dict[str, bytes]  # the Parquet bytes: samples, unlabelled, quarantine, features...
    refs: dict[str, ArtifactRef]  # where each table went, by the same names
    reasons_md: str  # the most frequent quarantine rules
    preview_md: str  # the first quarantined files and why

    @property
    def images_per_second(self) -> float:
        res = self.result
        return round(res.landed / res.seconds, 1) if res.seconds else 0.0


def validate_batch(
    store: ArtifactStore,
    raw: RawBatch,
    classes: Sequence[str],
    *,
    max_classes: int,
    min_acceptance_rate: float,
    limits: ImageLimits,
    label_limits: LabelLimits,
    aliases: Mapping[str, str] | None = None,
    max_annotation_bytes: int = 64 * 2**20,
) -> Validation:
    """Ingest the raw copy of ``raw``'s batch and write its three tables.

    Raises ``BatchRefused`` when ``batch.json`` declares more than ``max_classes`` classes, and
    ``ItemsLost`` when the accounting ``accepted + unlabelled + quarantined == landed`` fails.
    """
    bid = raw["batch_id"]
    manifest = Manifest.from_dict(json.loads(store.get_bytes(store.key_of(raw["manifest_uri"]))))
    n_classes = len(manifest.marker.get("classes") or [])
    if n_classes > max_classes:
        raise BatchRefused(
            f"{bid}/batch.json declares {n_classes:,} classes, more than "
            f"max_classes = {max_classes:,}"
        )
    files_key, out_key = raw["files_key"], layout.standardised(bid)
    dedup, pool = DedupIndex(store), set[str]()
    seen = dedup.seen_before(bid, pool)
    res = ingest_batch(
        bid,
        manifest,
        read=lambda rel: store.get_bytes(f"{files_key}/{rel}"),
        write=lambda key, data: store.put_bytes(f"{out_key}/{key}", data).uri,
        link=lambda rel, key: store.copy(f"{files_key}/{rel}", f"{out_key}/{key}"),
        seen=seen,
        classes=classes,
        limits=limits,
        label_limits=label_limits,
        pool=pool,
        aliases=aliases,
        max_annotation_bytes=max_annotation_bytes,
    )
    counts = {
        "landed": res.landed,
        "accepted": res.accepted,
        "unlabelled": len(res.unlabelled),
        "quarantined": len(res.quarantine),
    }
    if counts["accepted"] + counts["unlabelled"] + counts["quarantined"] != counts["landed"]:
        raise ItemsLost(f"intake lost track of items: {counts}")
    dedup.record(
        bid,
        {s["sha256"]: s["source"] for s in res.samples + res.unlabelled},
        unlabelled=[u["sha256"] for u in res.unlabelled],
        labelled_pool=[s["sha256"] for s in res.samples if s["sha256"] in pool],
    )
    tables = {
        "samples": table_bytes(res.samples, SAMPLE_COLUMNS),
        "unlabelled": table_bytes(res.unlabelled, UNLABELLED_COLUMNS),
        "quarantine": table_bytes(res.quarantine, QUARANTINE_COLUMNS),
        "annotation_problems": table_bytes(res.annotation_problems, ANNOTATION_PROBLEM_COLUMNS),
        "features": table_bytes(res.features),
    }
    refs = {
        name: store.put_bytes(layout.validated_table(bid, name), tables[name])
        for name in ("samples", "unlabelled", "quarantine", "annotation_problems")
    } | {"features": store.put_bytes(f"features/{bid}/features.parquet", tables["features"])}
    batch = BatchFormat.of(manifest.marker)
    validated: ValidatedBatch = {
        "batch_id": bid,
        "manifest_sha256": raw["manifest_sha256"],
        "samples": refs["samples"].as_dict(),
        "quarantine": refs["quarantine"].as_dict(),
        "images_prefix": f"{out_key}/images",
        "classes": list(classes),
        "acceptance_ok": res.acceptance_rate >= min_acceptance_rate,
        "landed": counts["landed"],
        "accepted": counts["accepted"],
        "quarantined": counts["quarantined"],
        "format": batch.fmt,
        "labels": batch.labels,
        "unlabelled": counts["unlabelled"],
        "unlabelled_table": refs["unlabelled"].as_dict(),
        "annotation_problems": refs["annotation_problems"].as_dict(),
    }
    if res.annotations:
        validated["annotations"] = res.annotations
    features: BatchFeatures = {
        "batch_id": bid,
        "features": refs["features"].as_dict(),
        "rows": len(res.features),
    }
    preview = [(clip(q["item"], 120), clip(q["reason"], 300)) for q in res.quarantine[:20]]
    return Validation(
        result=res,
        validated=validated,
        features=features,
        counts=counts,
        tables=tables,
        refs=refs,
        reasons_md=md_table(res.top_reasons(), ["rule", "items"]),
        preview_md=md_table(preview, ["file", "reason"]),
    )
