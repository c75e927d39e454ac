"""Annotation assets: the champion's proposals for each batch's unlabelled pool."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.defs.ingest.partitions import batches
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.lib.annotation.auto_accept import ACCEPT_CONF, AutoAccepted, land_auto_accepted
from cv_assets.lib.annotation.proposals import FLOOR, THRESHOLD, Proposals, propose_for_pool
from cv_assets.lib.annotation.records import PreAnnotations
from cv_assets.lib.core import layout
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.dataset.snapshot import parquet_bytes
from cv_assets.lib.ingest.records import ValidatedBatch
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import ArtifactStoreResource, LandingZoneResource


class PreAnnotationConfig(dg.Config):
    floor: float = Field(default=FLOOR, description="proposals under this confidence are dropped")
    threshold: float = Field(
        default=THRESHOLD,
        description="the app's decision threshold; a box's uncertainty is its margin to it",
    )
    auto_accept: bool = Field(
        default=False,
        description="land the images whose every proposal reaches accept_conf as a batch of "
        "model labels (label source model:v<version>, train split only); images without any "
        "proposal are never accepted",
    )
    accept_conf: float = Field(
        default=ACCEPT_CONF,
        ge=0.0,
        le=1.0,
        description="with auto_accept: the confidence every proposal of an image must reach",
    )


@dg.asset(
    partitions_def=batches,
    group_name="annotation",
    kinds={"onnx", "parquet"},
    owners=OWNERS,
    code_version="2",
)
def pre_annotations(
    context: dg.AssetExecutionContext,
    config: PreAnnotationConfig,
    validated_batch: ValidatedBatch,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
    landing: LandingZoneResource,
) -> dg.MaterializeResult[PreAnnotations]:
    """The champion's boxes on batch b's unlabelled images, with an uncertainty per image."""
    store, bid = artifacts.store, context.partition_key
    champ = champion_with_onnx(champion_model, "the unlabelled pool is pre-annotated")
    pool = validated_batch.get("unlabelled_table")
    out = propose_for_pool(
        store, pool["uri"] if pool else None, str(champ.mobile["onnx_uri"]),
        champ.class_names, config.floor, config.threshold,
    )  # fmt: skip
    prefix = layout.proposals_prefix(bid, champ.version)
    tables = {"boxes": parquet_bytes(out.boxes), "images": parquet_bytes(out.images)}
    refs = {k: store.put_bytes(f"{prefix}/{k}.parquet", v) for k, v in tables.items()}
    record: PreAnnotations = {
        "batch_id": bid,
        "champion_version": champ.version,
        "images": len(out.images),
        "boxes": len(out.boxes),
        "floor": config.floor,
        "threshold": config.threshold,
        "boxes_table": refs["boxes"].as_dict(),
        "images_table": refs["images"].as_dict(),
    }
    context.log.info(f"{bid}: {len(out.boxes)} proposals on {len(out.images)} unlabelled images")
    meta = _metadata(out, refs, tables["images"]) | {"champion_version": champ.version}
    if config.auto_accept:
        # Written as a producer writes a batch: landing_sensor takes it to intake like any other.
        zone = ArtifactStore(landing.root, s3_endpoint_url=landing.s3_endpoint_url)
        auto = land_auto_accepted(store, zone, out, bid, champ.version, champ.class_names,
                                  config.accept_conf, datetime.now(UTC))  # fmt: skip
        context.log.info(_auto_accept_line(auto, config.accept_conf))
        meta |= {"auto_accepted": auto.accepted, "auto_accept_batch": auto.batch_id}
    return dg.MaterializeResult(value=record, metadata=meta)


def _metadata(out: Proposals, refs: dict[str, ArtifactRef], images: bytes) -> dict[str, Any]:
    """The counts, the uncertainty histogram and the ten most uncertain images, for the UI."""
    top = out.images[["stem", "uncertainty", "n_boxes"]].head(10).itertuples(index=False)
    rows = [(stem, round(u, 3), n) for stem, u, n in top]
    return parquet_table_metadata(images) | {
        "images": len(out.images),
        "boxes": len(out.boxes),
        "uncertainty": dg.MetadataValue.md(md_table(out.histogram(), ["uncertainty", "images"])),
        "most_uncertain": dg.MetadataValue.md(md_table(rows, ["image", "uncertainty", "boxes"])),
        "images_table": dg.MetadataValue.path(refs["images"].uri),
        "boxes_table": dg.MetadataValue.path(refs["boxes"].uri),
    }


def _auto_accept_line(auto: AutoAccepted, accept_conf: float) -> str:
    if auto.written:
        done = f"landed {auto.accepted} images as batch {auto.batch_id}"
    elif auto.accepted:
        done = f"batch {auto.batch_id} ({auto.accepted} images) was already landed"
    else:
        done = "no image to land"
    return (
        f"auto_accept at {accept_conf}: {done}; skipped {auto.already_labelled} labelled since "
        f"and {auto.reencoded} re-encoded at intake (their bytes no longer name the pool image)"
    )
