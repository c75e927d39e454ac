"""Drift of each landed batch: its features and the champion's confidences vs the training data."""

import json
from typing import Any

import dagster as dg

from cv_assets.defs.common import OWNERS
from cv_assets.defs.ingest.partitions import batches
from cv_assets.defs.monitoring.champion import champion_with_onnx
from cv_assets.defs.monitoring.config import DriftConfig
from cv_assets.lib.core import layout
from cv_assets.lib.core.plots import markdown_image
from cv_assets.lib.core.report import md_table
from cv_assets.lib.monitoring.drift import drift_for_batch
from cv_assets.lib.monitoring.drift_plots import drift_chart_png
from cv_assets.lib.tracking import runs as tracking
from cv_assets.resources.storage import ArtifactStoreResource, MlflowResource

DRIFT_CODE_VERSION = "1"
MONITORING_EXPERIMENT = "cv_assets_monitoring"


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
    batch_features: dict[str, Any],
    validated_batch: dict[str, Any],
    champion_model: dict[str, Any],
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
    prefix = layout.drift_prefix(bid, champ.version)
    files = {
        "report.html": res.html.encode(),
        "report.json": json.dumps(res.report_json, indent=1, default=str).encode(),
    }
    html = store.put_bytes(f"{prefix}/report.html", files["report.html"])
    report = store.put_bytes(f"{prefix}/report.json", files["report.json"])
    # The same report in MLflow, where a click from the UI opens the HTML rendered.
    exp, run_id = tracking.log_report_run(
        tracking.client(mlflow.tracking_uri),
        MONITORING_EXPERIMENT,
        f"drift {bid} vs v{champ.version}",
        {"cv_assets/batch": bid, "cv_assets/champion_version": str(champ.version)}
        | tracking.dagster_tags(context.run.run_id, "drift_report", bid),
        {"drift_share": res.drift_share} | {f"p_{c}": v["p_value"] for c, v in res.columns.items()},
        {f"drift/{k}": v for k, v in files.items()},
        f"{mlflow.artifact_root.rstrip('/')}/monitoring" if mlflow.artifact_root else None,
    )
    chart = drift_chart_png(res.columns, settings.column_threshold, res.drift_share)
    rows = [(c, v["p_value"], "DRIFT" if v["drifted"] else "") for c, v in res.columns.items()]
    record = {
        "batch_id": bid,
        "champion_version": champ.version,
        "report_uri": html.uri,
        "report_json_uri": report.uri,
        **res.summary(),
    }
    context.log.info(f"{bid}: drift share {res.drift_share:.2f} drifted={res.drifted}")
    return dg.MaterializeResult(
        value=record,
        metadata={
            "drift_share": res.drift_share,
            "drifted": res.drifted,
            "drifted_columns": ", ".join(c for c, v in res.columns.items() if v["drifted"]) or "-",
            "champion_version": champ.version,
            "reference_rows": res.reference_rows,
            "current_rows": res.current_rows,
            "chart": dg.MetadataValue.md(markdown_image(chart, "drift per column")),
            "columns": dg.MetadataValue.md(md_table(rows, ["column", "K-S p-value", ""])),
            "report_html": dg.MetadataValue.url(
                tracking.artifact_url(mlflow.ui_url, exp, run_id, "drift/report.html")
            ),
            "mlflow_run": dg.MetadataValue.url(tracking.run_url(mlflow.ui_url, exp, run_id)),
            "report": dg.MetadataValue.path(html.uri),
            "report_json": dg.MetadataValue.path(report.uri),
        },
    )
