"""The review queue of each landed batch: label boxes cleanlab finds wrong, ranked, with crops."""

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

REVIEW_CODE_VERSION = "2"  # 2: confident learning (cleanlab ObjectLab) replaced the heuristic
_DEFAULTS = ReviewSettings()


class ReviewConfig(dg.Config):
    conf_floor: float = Field(
        default=_DEFAULTS.conf_floor,
        description="champion boxes below this confidence are no evidence; cleanlab reads the rest",
    )
    conf_min: float | None = Field(
        default=_DEFAULTS.conf_min,
        description="confidence from which a champion box is confident evidence of an unlabelled "
        "object or another class; empty: read on the champion's calibration on the batch",
    )
    max_quality: float = Field(
        default=_DEFAULTS.max_quality,
        description="a box whose cleanlab quality (0 wrong .. 1 right) is at most this is queued",
    )
    iou_match: float = Field(
        default=_DEFAULTS.iou_match,
        description="a label box that no champion box overlaps this much is an extra label",
    )
    max_items: int = Field(default=200, description="the queue keeps this many, most severe first")

    def settings(self) -> ReviewSettings:
        return ReviewSettings(self.conf_floor, self.conf_min, self.max_quality, self.iou_match)


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
    """Label boxes of batch b that cleanlab finds wrong against the champion, ranked, cropped."""
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
    context.log.info(
        f"{bid}: {len(q.table)} items of {q.found} found on {q.flagged} of {q.images} images"
    )
    return dg.MaterializeResult(
        value=out.record,
        metadata={
            **q.counts,
            "items": len(q.table),
            "found": q.found,
            "images": q.images,
            "flagged_images": q.flagged,
            "champion_version": champ.version,
            # the confidences used: the CLI's suggestions are the boxes from conf_min
            "conf_min": q.conf_min,
            "top_items": dg.MetadataValue.md(out.top_md),
            "table": dg.MetadataValue.path(out.table.uri),
            "table_sha256": out.table.sha256,
            **parquet_table_metadata(out.table_bytes),
        },
    )
