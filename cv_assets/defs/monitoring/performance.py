"""Live accuracy of the champion on each landed batch (its labels make the real mAP measurable)."""

import dagster as dg
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.defs.ingest.partitions import batches
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.lib.ingest.records import ValidatedBatch
from cv_assets.lib.monitoring.performance import EVAL_CONF, EVAL_IOU, batch_performance
from cv_assets.lib.monitoring.publish import publish_performance
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import ArtifactStoreResource


class PerformanceConfig(dg.Config):
    margin: float = Field(
        default=0.10,
        description="absolute mAP50 a batch may fall below the champion's test mAP50 before it "
        "is degraded (and retraining is requested)",
    )
    min_images: int = Field(default=20, description="fewer accepted images are not judged")
    max_images: int = Field(
        default=2000, description="larger batches are scored on this many (by content hash)"
    )
    conf: float = Field(
        default=EVAL_CONF, description="confidence threshold (the test evaluation's, to compare)"
    )
    iou: float = Field(default=EVAL_IOU, description="NMS IoU threshold (the test evaluation's)")


@dg.asset(
    partitions_def=batches,
    group_name="monitoring",
    kinds={"onnx"},
    owners=OWNERS,
    code_version="1",
)
def champion_performance(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    validated_batch: ValidatedBatch,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
) -> dg.MaterializeResult:
    """The champion's mAP on batch b's labelled images, judged against its test mAP50."""
    store, bid = artifacts.store, context.partition_key
    champ = champion_with_onnx(champion_model, "live accuracy is measured")
    perf = batch_performance(
        store,
        batch_id=bid,
        samples_uri=validated_batch["samples"]["uri"],
        detector_uri=str(champ.mobile["onnx_uri"]),
        dataset_version=champ.dataset_version,
        classes=champ.class_names,
        champion_test_map50=champ.map50,
        margin=config.margin,
        min_images=config.min_images,
        max_images=config.max_images,
        conf=config.conf,
        iou=config.iou,
    )
    out = publish_performance(store, perf, champion_version=champ.version)
    s = out.record
    (context.log.warning if perf.degraded else context.log.info)(f"{bid}: {perf.reason}")
    nan = float("nan")  # a missing test mAP50 is plotted as a gap, never as a fake 0
    return dg.MaterializeResult(
        value=out.record,
        metadata={
            **{k: s[k] for k in ("map50", "map50_95", "precision", "recall", "images")},
            "champion_test_map50": nan if champ.map50 is None else champ.map50,
            "drop": nan if s["drop"] is None else s["drop"],
            "degraded": perf.degraded,
            "in_training_data": perf.in_training_data,
            "champion_version": champ.version,
            "reason": perf.reason,
            "per_class": dg.MetadataValue.md(out.per_class_md),
            "report": dg.MetadataValue.path(out.report.uri),
        },
    )
