"""Writing what a monitoring asset measured: its files under the batch and champion in the store,
an MLflow run where a report is read, the record handed downstream and the tables a person reads.

The measuring lives beside this (``drift.py``, ``review.py``, ``performance.py``); each asset calls
the measure, then the matching ``publish_*``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cv_assets.lib.core import layout
from cv_assets.lib.core.plots import markdown_image
from cv_assets.lib.core.report import md_table
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.monitoring.drift import DriftResult
from cv_assets.lib.monitoring.drift_plots import drift_chart_png
from cv_assets.lib.monitoring.performance import BatchPerformance
from cv_assets.lib.monitoring.review import ReviewQueue, thumbnail_png
from cv_assets.lib.tracking import runs as tracking

MONITORING_EXPERIMENT = "cv_assets_monitoring"


@dataclass
class PublishedDrift:
    result: DriftResult
    html: ArtifactRef
    report: ArtifactRef
    experiment_id: str
    run_id: str  # the MLflow run holding the report
    record: dict[str, Any]
    chart_md: str  # the p-value of every column, as an inline image
    columns_md: str

    @property
    def drifted_columns(self) -> str:
        return ", ".join(c for c, v in self.result.columns.items() if v["drifted"]) or "-"


def publish_drift(
    store: ArtifactStore,
    mlflow_client: Any,
    res: DriftResult,
    *,
    batch_id: str,
    champion_version: str,
    column_threshold: float,
    run_tags: Mapping[str, str],
    artifact_root: str | None,
) -> PublishedDrift:
    """Write a batch's drift report (HTML and JSON) and log the same files to an MLflow run of
    the monitoring experiment, where a click from the UI opens the HTML rendered.

    Args:
        run_tags: the Dagster run, asset and partition that measured (``tracking.dagster_tags``).
        artifact_root: MLflow's artifact root, if the server has one (reports go under
            ``monitoring/`` there).
    """
    prefix = layout.drift_prefix(batch_id, champion_version)
    files = {
        "report.html": res.html.encode(),
        "report.json": json.dumps(res.report_json, indent=1, default=str).encode(),
    }
    html = store.put_bytes(f"{prefix}/report.html", files["report.html"])
    report = store.put_bytes(f"{prefix}/report.json", files["report.json"])
    exp, run_id = tracking.log_report_run(
        mlflow_client,
        MONITORING_EXPERIMENT,
        f"drift {batch_id} vs v{champion_version}",
        {"cv_assets/batch": batch_id, "cv_assets/champion_version": str(champion_version)}
        | dict(run_tags),
        {"drift_share": res.drift_share} | {f"p_{c}": v["p_value"] for c, v in res.columns.items()},
        {f"drift/{k}": v for k, v in files.items()},
        f"{artifact_root.rstrip('/')}/monitoring" if artifact_root else None,
    )
    chart = drift_chart_png(res.columns, column_threshold, res.drift_share)
    rows = [(c, v["p_value"], "DRIFT" if v["drifted"] else "") for c, v in res.columns.items()]
    record = {
        "batch_id": batch_id,
        "champion_version": champion_version,
        "report_uri": html.uri,
        "report_json_uri": report.uri,
        **res.summary(),
    }
    return PublishedDrift(
        result=res,
        html=html,
        report=report,
        experiment_id=exp,
        run_id=run_id,
        record=record,
        chart_md=markdown_image(chart, "drift per column"),
        columns_md=md_table(rows, ["column", "K-S p-value", ""]),
    )


@dataclass
class PublishedReview:
    queue: ReviewQueue
    table_bytes: bytes  # the queue, as Parquet
    table: ArtifactRef
    record: dict[str, Any]
    top_md: str  # the ten most severe items, each with a thumbnail of its crop


def publish_review(
    store: ArtifactStore, q: ReviewQueue, *, batch_id: str, champion_version: str
) -> PublishedReview:
    """Write a batch's review queue: one crop per item, then the table that points at them."""
    prefix = layout.review_prefix(batch_id, champion_version)
    q.table["crop_uri"] = [
        store.put_bytes(f"{prefix}/crops/{name}", png).uri
        for name, png in zip(q.table["crop"], q.crops, strict=True)
    ]
    data = q.table_bytes()
    table = store.put_bytes(f"{prefix}/queue.parquet", data)
    top = [
        (*row, markdown_image(thumbnail_png(png), row[3]))
        for row, png in zip(q.top_rows(10), q.crops[:10], strict=True)
    ]
    record = {
        "batch_id": batch_id,
        "champion_version": champion_version,
        "counts": q.counts,
        "items": len(q.table),
        "found": q.found,
        "images": q.images,
        "table": table.as_dict(),
        "crops_prefix": store.uri(f"{prefix}/crops"),
    }
    top_md = (
        md_table(top, ["rank", "kind", "score", "stem", "details", "crop"])
        if top
        else "no disagreements above the thresholds"
    )
    return PublishedReview(q, data, table, record, top_md)


@dataclass
class PublishedPerformance:
    performance: BatchPerformance
    record: dict[str, Any]  # with ``report_uri``, where the same record was written
    report: ArtifactRef
    per_class_md: str


def publish_performance(
    store: ArtifactStore, perf: BatchPerformance, *, champion_version: str
) -> PublishedPerformance:
    """Write the champion's accuracy on one batch, per class, under the batch and champion."""
    record = perf.summary() | {"champion_version": champion_version, "per_class": perf.per_class()}
    ref = store.put_bytes(
        layout.performance_record(perf.batch_id, champion_version), json.dumps(record).encode()
    )
    rows = [(c["class"], c["instances"], c["ap50"], c["ap50_95"]) for c in record["per_class"]]
    per_class_md = md_table(rows, ["class", "boxes", "AP50", "AP50-95"])
    return PublishedPerformance(perf, record | {"report_uri": ref.uri}, ref, per_class_md)
