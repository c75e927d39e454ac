"""Drift of each landed batch: its features and the champion's confidences vs the training data."""

import dagster as dg

from cv_assets.defs.common import OWNERS
from cv_assets.defs.ingest.partitions import batches
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.defs.monitoring.config import DriftConfig
from cv_assets.lib.ingest.records import BatchFeatures, ValidatedBatch
from cv_assets.lib.monitoring.drift import drift_for_batch
from cv_assets.lib.monitoring.publish import publish_drift
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource

DRIFT_CODE_VERSION = "1"


@dg.asset(
    partitions_def=batches,
    group_name="monitoring",
    kinds={"evidently", "onnx"},
    owners=OWNERS,
    code_version=DRIFT_CODE_VERSION,
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    batch_features: BatchFeatures,
    validated_batch: ValidatedBatch,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Evidently drift report of batch b's features and champion confidences vs training data."""
    store, bid = artifacts.store, context.partition_key
    champ = champion_with_onnx(
        champion_model, "drift is measured against the champion's training data"
    )
    settings = config.settings()
    res = drift_for_batch(
        store,
        champion_key=champ.weights_sha256[:16],
        dataset_version=champ.dataset_version,
        detector_uri=str(champ.mobile["onnx_uri"]),
        features_uri=batch_features["features"]["uri"],
        samples_uri=validated_batch["samples"]["uri"],
        classes=champ.class_names,
        settings=settings,
        max_prediction_images=config.max_prediction_images,
    )
    out = publish_drift(
        store,
        tracking.client(mlflow.tracking_uri),
        res,
        batch_id=bid,
        champion_version=champ.version,
        column_threshold=settings.column_threshold,
        run_tags=tracking.dagster_tags(context.run.run_id, "drift_report", bid),
        artifact_root=mlflow.artifact_root,
    )
    exp, run_id = out.experiment_id, out.run_id
    context.log.info(f"{bid}: drift share {res.drift_share:.2f} drifted={res.drifted}")
    return dg.MaterializeResult(
        value=out.record,
        metadata={
            "drift_share": res.drift_share,
            "drifted": res.drifted,
            "drifted_columns": out.drifted_columns,
            "champion_version": champ.version,
            "reference_rows": res.reference_rows,
            "current_rows": res.current_rows,
            "chart": dg.MetadataValue.md(out.chart_md),
            "columns": dg.MetadataValue.md(out.columns_md),
            "report_html": dg.MetadataValue.url(
                tracking.artifact_url(mlflow.ui_url, exp, run_id, "drift/report.html")
            ),
            "mlflow_run": dg.MetadataValue.url(tracking.run_url(mlflow.ui_url, exp, run_id)),
            "report": dg.MetadataValue.path(out.html.uri),
            "report_json": dg.MetadataValue.path(out.report.uri),
        },
    )
