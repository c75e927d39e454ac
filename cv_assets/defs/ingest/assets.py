"""Intake assets: raw copy, validation (with quarantine) and per-image features of each batch."""

from typing import Any

import dagster as dg

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.defs.ingest.checks import ACCEPTANCE_CHECK, acceptance_result
from cv_assets.defs.ingest.config import IntakeConfig
from cv_assets.defs.ingest.partitions import batches
from cv_assets.lib.ingest.landing import BatchRefused
from cv_assets.lib.ingest.raw import copy_raw_batch
from cv_assets.lib.ingest.records import RawBatch
from cv_assets.lib.ingest.validate import ItemsLost, Validation, validate_batch
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
) -> dg.MaterializeResult[RawBatch]:
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
    raw_batch: RawBatch,
    artifacts: ArtifactStoreResource,
    settings: PlatformSettings,
):
    """Decode every image, validate labels with pandera, standardise, quarantine and measure."""
    try:
        v = validate_batch(
            artifacts.store,
            raw_batch,
            settings.classes,
            max_classes=config.max_classes,
            min_acceptance_rate=config.min_acceptance_rate,
            limits=config.limits(),
            label_limits=config.label_limits(),
            aliases=settings.class_aliases,
            max_annotation_bytes=config.max_annotation_bytes,
        )
    except BatchRefused as e:
        raise dg.Failure(description=f"refused: {e}", allow_retries=False) from None
    except ItemsLost as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    rate, threshold = v.result.acceptance_rate, config.min_acceptance_rate
    yield dg.MaterializeResult(
        asset_key="validated_batch",
        value=v.validated,
        data_version=dg.DataVersion(v.refs["samples"].sha256),
        check_results=[acceptance_result(rate, threshold, v.counts, v.reasons_md)],
        metadata=_validated_metadata(v),
    )
    yield dg.MaterializeResult(
        asset_key="batch_features",
        value=v.features,
        data_version=dg.DataVersion(v.refs["features"].sha256),
        metadata=parquet_table_metadata(v.tables["features"])
        | {
            "rows": v.features["rows"],
            "features": dg.MetadataValue.path(v.refs["features"].uri),
            "features_sha256": v.refs["features"].sha256,
        },
    )


def _validated_metadata(v: Validation) -> dict[str, Any]:
    """What the UI shows on ``validated_batch``: counts, both tables, the reasons, the hashes."""
    samples, quarantine = v.refs["samples"], v.refs["quarantine"]
    imported = v.result.annotations
    return (
        dict(v.counts)
        | {"format": v.validated.get("format", "yolo"), "labels": v.validated.get("labels", "full")}
        | {k: val for k, val in imported.items() if isinstance(val, int)}
        | parquet_table_metadata(v.tables["samples"])
        | parquet_table_metadata(v.tables["quarantine"], "quarantine")
        | {
            "acceptance_rate": round(v.result.acceptance_rate, 4),
            "acceptance_ok": v.validated.get("acceptance_ok", True),
            "top_reasons": dg.MetadataValue.md(v.reasons_md),
            "quarantine_preview": dg.MetadataValue.md(v.preview_md),
            "samples": dg.MetadataValue.path(samples.uri),
            "samples_sha256": samples.sha256,
            "quarantine_table": dg.MetadataValue.path(quarantine.uri),
            "quarantine_sha256": quarantine.sha256,
            "unlabelled_table": dg.MetadataValue.path(v.refs["unlabelled"].uri),
            **(
                {
                    "adapter": str(imported["adapter"]),
                    "annotation_problems": dg.MetadataValue.path(v.refs["annotation_problems"].uri),
                }
                if imported
                else {}
            ),
            "manifest_sha256": v.validated["manifest_sha256"],
            "images_per_second": v.images_per_second,
        }
    )
