"""The review queue of each landed batch: labels the champion contradicts, ranked, with crops."""

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS, parquet_table_metadata
from cv_assets.defs.ingest.partitions import batches
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.lib.ingest.records import ValidatedBatch
from cv_assets.lib.monitoring.publish import publish_review
from cv_assets.lib.monitoring.review import ReviewSettings, review_batch
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import ArtifactStoreResource

REVIEW_CODE_VERSION = "1"
_DEFAULTS = ReviewSettings()


class ReviewConfig(dg.Config):
    conf_min: float = Field(
        default=_DEFAULTS.conf_min, description="champion confidence below which a box is ignored"
    )
    iou_match: float = Field(
        default=_DEFAULTS.iou_match,
        description="IoU under which a prediction overlaps no label box (missing_label)",
    )
    iou_ok: float = Field(
        default=_DEFAULTS.iou_ok,
        description="IoU from which a prediction agrees with a label box's position",
    )
    max_items: int = Field(default=200, description="the queue keeps this many, most severe first")

    def settings(self) -> ReviewSettings:
        return ReviewSettings(self.conf_min, self.iou_match, self.iou_ok)


@dg.asset(
    partitions_def=batches,
    group_name="monitoring",
    kinds={"onnx", "parquet"},
    owners=OWNERS,
    code_version=REVIEW_CODE_VERSION,
)
def review_queue(
    context: dg.AssetExecutionContext,
    config: ReviewConfig,
    validated_batch: ValidatedBatch,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """Labels of batch b that the champion contradicts most, ranked, with a crop of each."""
    store, bid = artifacts.store, context.partition_key
    champ = champion_with_onnx(champion_model, "the queue is the champion's view of the labels")
    q = review_batch(
        store,
        samples_uri=validated_batch["samples"]["uri"],
        detector_uri=str(champ.mobile["onnx_uri"]),
        classes=champ.class_names,
        settings=config.settings(),
        max_items=config.max_items,
    )
    out = publish_review(store, q, batch_id=bid, champion_version=champ.version)
    context.log.info(f"{bid}: {len(q.table)} items of {q.found} found in {q.images} images")
    return dg.MaterializeResult(
        value=out.record,
        metadata={
            **q.counts,
            "items": len(q.table),
            "found": q.found,
            "images": q.images,
            "champion_version": champ.version,
            "conf_min": config.conf_min,
            "top_items": dg.MetadataValue.md(out.top_md),
            "table": dg.MetadataValue.path(out.table.uri),
            "table_sha256": out.table.sha256,
            **parquet_table_metadata(out.table_bytes),
        },
    )
