"""Intake assets: raw copy, validation (with quarantine) and per-image features of each batch."""

import json
from typing import Any

import dagster as dg

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.defs.ingest.checks import ACCEPTANCE_CHECK, acceptance_result
from cv_assets.defs.ingest.config import IntakeConfig
from cv_assets.defs.ingest.partitions import batches
from cv_assets.lib.core import layout
from cv_assets.lib.core.report import md_table
from cv_assets.lib.ingest.intake import (
    QUARANTINE_COLUMNS,
    SAMPLE_COLUMNS,
    ingest_batch,
    table_bytes,
)
from cv_assets.lib.ingest.landing import BatchRefused, Manifest, clip
from cv_assets.lib.ingest.raw import DedupIndex, copy_raw_batch
from cv_assets.resources.storage import ArtifactStoreResource, LandingZoneResource, PlatformSettings

RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


@dg.asset(
    partitions_def=batches,
    group_name="ingest",
    kinds={"python"},
    owners=OWNERS,
    code_version="1",
    retry_policy=RETRY,
)
def raw_batch(
    context: dg.AssetExecutionContext,
    landing: LandingZoneResource,
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult[dict[str, Any]]:
    """Immutable copy of one landed batch, with a manifest of every file's sha256."""
    store = artifacts.store
    try:
        rec = copy_raw_batch(
            landing.zone,
            store,
            context.partition_key,
            settings.classes,
            max_classes=IntakeConfig().max_classes,  # what landing_sensor applied
        )
    except BatchRefused as e:
        raise dg.Failure(description=f"refused: {e}", allow_retries=False) from None
    context.log.info("%s: %d files copied", rec["batch_id"], rec["n_files"])
    return dg.MaterializeResult(
        value=rec,
        data_version=dg.DataVersion(rec["manifest_sha256"]),
        metadata={
            "files": rec["n_files"],
            "bytes": rec["n_bytes"],
            "manifest_sha256": rec["manifest_sha256"],
            "manifest": dg.MetadataValue.path(rec["manifest_uri"]),
            "reused_existing_copy": rec["reused"],
        },
    )


@dg.multi_asset(
    outs={
        "validated_batch": dg.AssetOut(
            description="Accepted, standardised samples of a batch, and a quarantine table with a "
            "reason for every rejected file.",
            kinds={"pandera", "parquet"},
            owners=OWNERS,
            code_version="1",
        ),
        "batch_features": dg.AssetOut(
            description="One row per accepted image: brightness, contrast, sharpness, size, box "
            "count, box sizes and aspect by class.",
            kinds={"parquet"},
            owners=OWNERS,
            code_version="1",
        ),
    },
    partitions_def=batches,
    group_name="ingest",
    check_specs=[ACCEPTANCE_CHECK],
    # Duplicate detection compares against batches validated earlier: one batch at a time.
    pool="cv_assets_intake",
    retry_policy=RETRY,
)
def intake(
    context: dg.AssetExecutionContext,
    config: IntakeConfig,
    raw_batch: dict[str, Any],
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
):
    """Decode every image, validate labels with pandera, standardise, quarantine and measure."""
    store, bid = artifacts.store, context.partition_key
    manifest = Manifest.from_dict(
        json.loads(store.get_bytes(store.key_of(raw_batch["manifest_uri"])))
    )
    n_classes = len(manifest.marker.get("classes") or [])
    if n_classes > config.max_classes:
        raise dg.Failure(
            description=f"refused: {bid}/batch.json declares {n_classes:,} classes, more than "
            f"max_classes = {config.max_classes:,}",
            allow_retries=False,
        )
    files_key, out_key = raw_batch["files_key"], layout.standardised(bid)
    dedup = DedupIndex(store)
    res = ingest_batch(
        bid,
        manifest,
        read=lambda rel: store.get_bytes(f"{files_key}/{rel}"),
        write=lambda key, data: store.put_bytes(f"{out_key}/{key}", data).uri,
        link=lambda rel, key: store.copy(f"{files_key}/{rel}", f"{out_key}/{key}"),
        seen=dedup.seen_before(bid),
        classes=settings.classes,
        limits=config.limits(),
        label_limits=config.label_limits(),
    )
    counts = {"landed": res.landed, "accepted": res.accepted, "quarantined": len(res.quarantine)}
    if counts["accepted"] + counts["quarantined"] != counts["landed"]:  # never silently lose one
        raise dg.Failure(description=f"intake lost track of items: {counts}", allow_retries=False)
    dedup.record(bid, {s["sha256"]: s["source"] for s in res.samples})
    tables = {
        "samples": table_bytes(res.samples, SAMPLE_COLUMNS),
        "quarantine": table_bytes(res.quarantine, QUARANTINE_COLUMNS),
        "features": table_bytes(res.features),
    }
    samples = store.put_bytes(layout.validated_table(bid, "samples"), tables["samples"])
    quarantine = store.put_bytes(layout.validated_table(bid, "quarantine"), tables["quarantine"])
    features = store.put_bytes(f"features/{bid}/features.parquet", tables["features"])
    reasons = md_table(res.top_reasons(), ["rule", "items"])
    preview = md_table(
        [(clip(q["item"], 120), clip(q["reason"], 300)) for q in res.quarantine[:20]],
        ["file", "reason"],
    )
    validated = {
        "batch_id": bid,
        "manifest_sha256": raw_batch["manifest_sha256"],
        "samples": samples.as_dict(),
        "quarantine": quarantine.as_dict(),
        "images_prefix": f"{out_key}/images",
        "classes": settings.classes,
        "acceptance_ok": res.acceptance_rate >= config.min_acceptance_rate,
        **counts,
    }
    yield dg.MaterializeResult(
        asset_key="validated_batch",
        value=validated,
        data_version=dg.DataVersion(samples.sha256),
        check_results=[
            acceptance_result(res.acceptance_rate, config.min_acceptance_rate, counts, reasons)
        ],
        metadata=counts
        | parquet_table_metadata(tables["samples"])
        | parquet_table_metadata(tables["quarantine"], "quarantine")
        | {
            "acceptance_rate": round(res.acceptance_rate, 4),
            "acceptance_ok": validated["acceptance_ok"],
            "top_reasons": dg.MetadataValue.md(reasons),
            "quarantine_preview": dg.MetadataValue.md(preview),
            "samples": dg.MetadataValue.path(samples.uri),
            "samples_sha256": samples.sha256,
            "quarantine_table": dg.MetadataValue.path(quarantine.uri),
            "quarantine_sha256": quarantine.sha256,
            "manifest_sha256": raw_batch["manifest_sha256"],
            "images_per_second": round(res.landed / res.seconds, 1) if res.seconds else 0.0,
        },
    )
    yield dg.MaterializeResult(
        asset_key="batch_features",
        value={"batch_id": bid, "features": features.as_dict(), "rows": len(res.features)},
        data_version=dg.DataVersion(features.sha256),
        metadata=parquet_table_metadata(tables["features"])
        | {
            "rows": len(res.features),
            "features": dg.MetadataValue.path(features.uri),
            "features_sha256": features.sha256,
        },
    )
