"""MLflow tracking: one run per training, owned by the asset that trains.

The client is used explicitly (never ``mlflow.start_run``'s global state), so a run is never
shared between threads or left attached to a process. Failing to reach the tracking server is
reported with its URI, quickly, instead of after minutes of silent HTTP retries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

# Fail fast and name the server; the asset's retry policy decides about trying again.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

EXPERIMENT = "cv_assets"
MODEL_NAME = "cv_assets_detector"


class TrackingUnavailable(RuntimeError):
    pass


def client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(c: Any, name: str = EXPERIMENT, artifact_location: str | None = None) -> str:
    """The experiment's id, created on first use. Raises ``TrackingUnavailable`` with the URI.

    ``artifact_location`` matters only at creation: without it MLflow would put artifacts in
    ``./mlruns`` relative to whatever directory the process happens to run in.
    """
    try:
        exp = c.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception as e:  # mlflow raises many types for "cannot reach the store"
        raise TrackingUnavailable(
            f"MLflow tracking at {c.tracking_uri} is unreachable: {type(e).__name__}: {e}"
        ) from e


def start_run(c: Any, run_name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
    exp = experiment_id(c)
    t = dict(tags) | ({"mlflow.parentRunId": parent} if parent else {})
    return c.create_run(exp, run_name=run_name, tags=t).info.run_id


def log_params(c: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def log_metrics(c: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """One request for a whole row of metrics (an epoch), not one per metric."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    safe = {k.replace("(", "_").replace(")", ""): v for k, v in metrics.items()}
    c.log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in safe.items()])


def run_url(ui_url: str, experiment: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def artifact_url(ui_url: str, experiment: str, run_id: str, path: str) -> str:
    """The MLflow UI's page for one artifact of a run (HTML artifacts are rendered there)."""
    return f"{run_url(ui_url, experiment, run_id)}/artifactPath/{path}"


def log_report_run(
    c: Any,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Mapping[str, bytes],
    artifact_location: str | None = None,
) -> tuple[str, str]:
    """A finished run holding a report's files as artifacts; returns (experiment id, run id).

    Reports get their own experiment, so they never mix with the training runs people compare.
    """
    import tempfile
    from pathlib import Path

    exp = experiment_id(c, experiment, artifact_location)
    run_id = c.create_run(exp, run_name=run_name, tags=dict(tags)).info.run_id
    log_metrics(c, run_id, metrics)
    with tempfile.TemporaryDirectory(prefix="cv_assets_mlflow_") as tmp:
        for name, data in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        c.log_artifacts(run_id, tmp)
    c.set_terminated(run_id)
    return exp, run_id


def model_url(ui_url: str, name: str, version: str) -> str:
    return f"{ui_url.rstrip('/')}/#/models/{name}/versions/{version}"


def log_onnx_model(c: Any, run_id: str, path: str, artifact_path: str) -> None:
    """An ONNX file as an MLflow model (onnx flavor) with its tensor signature, in ``run_id``.

    The model directory is written with ``save_model`` and uploaded with the explicit client, so
    no fluent-API run becomes active in this process.
    """
    import tempfile

    import mlflow.onnx
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = onnx.load(path)

    def spec(v: Any) -> TensorSpec:
        dims = tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim)
        return TensorSpec(np.dtype(np.float32), dims, v.name)

    sig = ModelSignature(
        inputs=Schema([spec(v) for v in model.graph.input]),
        outputs=Schema([spec(v) for v in model.graph.output]),
    )
    with tempfile.TemporaryDirectory(prefix="cv_assets_mlflow_") as tmp:
        target = f"{tmp}/{artifact_path.rsplit('/', 1)[-1]}"
        mlflow.onnx.save_model(model, target, signature=sig)
        c.log_artifacts(run_id, target, artifact_path)
