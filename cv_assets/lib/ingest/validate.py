"""Validation of one raw batch, end to end: read its manifest, ingest every file against the
duplicate index, and write the samples, quarantine and feature tables to the store.

``validated_batch`` and ``batch_features`` are two faces of this one pass; the asset only turns
what it returns into Dagster metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from cv_assets.lib.core import layout
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.intake import (
    QUARANTINE_COLUMNS,
    SAMPLE_COLUMNS,
    IngestResult,
    ingest_batch,
    table_bytes,
)
from cv_assets.lib.ingest.labels import LabelLimits
from cv_assets.lib.ingest.landing import BatchRefused, Manifest, clip
from cv_assets.lib.ingest.raw import DedupIndex
from cv_assets.lib.ingest.records import BatchFeatures, RawBatch, ValidatedBatch


class ItemsLost(RuntimeError):
    """Some landed item ended up neither accepted nor quarantined: never silently lose one."""


@dataclass
class Validation:
    """What one validation wrote, and the records it hands downstream."""

    result: IngestResult
    validated: ValidatedBatch
    features: BatchFeatures
    counts: dict[str, int]  # landed, accepted, quarantined
    tables: dict[str, bytes]  # the Parquet bytes: samples, quarantine, features
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
) -> Validation:
    """Ingest the raw copy of ``raw``'s batch and write its three tables.

    Raises ``BatchRefused`` when ``batch.json`` declares more than ``max_classes`` classes, and
    ``ItemsLost`` when the accounting ``accepted + quarantined == landed`` fails.
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
    dedup = DedupIndex(store)
    res = ingest_batch(
        bid,
        manifest,
        read=lambda rel: store.get_bytes(f"{files_key}/{rel}"),
        write=lambda key, data: store.put_bytes(f"{out_key}/{key}", data).uri,
        link=lambda rel, key: store.copy(f"{files_key}/{rel}", f"{out_key}/{key}"),
        seen=dedup.seen_before(bid),
        classes=classes,
        limits=limits,
        label_limits=label_limits,
    )
    counts = {"landed": res.landed, "accepted": res.accepted, "quarantined": len(res.quarantine)}
    if counts["accepted"] + counts["quarantined"] != counts["landed"]:
        raise ItemsLost(f"intake lost track of items: {counts}")
    dedup.record(bid, {s["sha256"]: s["source"] for s in res.samples})
    tables = {
        "samples": table_bytes(res.samples, SAMPLE_COLUMNS),
        "quarantine": table_bytes(res.quarantine, QUARANTINE_COLUMNS),
        "features": table_bytes(res.features),
    }
    refs = {
        "samples": store.put_bytes(layout.validated_table(bid, "samples"), tables["samples"]),
        "quarantine": store.put_bytes(
            layout.validated_table(bid, "quarantine"), tables["quarantine"]
        ),
        "features": store.put_bytes(f"features/{bid}/features.parquet", tables["features"]),
    }
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
    }
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
