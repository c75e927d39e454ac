"""MLflow tracking: one run per training, owned by the asset that trains.

The client is used explicitly (never ``mlflow.start_run``'s global state), so a run is never
shared between threads or left attached to a process. Failing to reach the tracking server is
reported with its URI, quickly, instead of after minutes of silent HTTP retries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cv_assets.lib.core.secrets import mask_secrets_in, mask_uri

# Fail fast and name the server; the asset's retry policy decides about trying again.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

EXPERIMENT = "cv_assets"
MODEL_NAME = "cv_assets_detector"


class TrackingUnavailable(ConnectionError, RuntimeError):
    """MLflow could not be reached (or refused what the platform needs); names the tracking URI.

    A ``ConnectionError`` (an ``OSError``), so the CLI reports it as one line, not a traceback.
    """


def answered(e: BaseException) -> bool:
    """Whether MLflow answered with a refusal (bad request, not found, denied), not silence."""
    from mlflow.exceptions import MlflowException

    silent = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
    return isinstance(e, MlflowException) and e.error_code not in silent


def is_missing(e: BaseException) -> bool:
    """Whether MLflow answered "no such object" (as opposed to failing to answer)."""
    return answered(e) and getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def unavailable(c: Any, e: BaseException, doing: str = "") -> TrackingUnavailable:
    """``e`` (raised by the client ``c`` while ``doing``) as an error that names the server.

    The URI is masked (``user:***@host``), and so is ``e``'s text: MLflow echoes the URL it was
    given, password included, in its own messages.
    """
    uri = c.tracking_uri
    said = mask_secrets_in(str(e), [uri])
    if answered(e):
        return TrackingUnavailable(f"MLflow tracking at {mask_uri(uri)} refused {doing}: {said}")
    what = f" ({doing})" if doing else ""
    return TrackingUnavailable(
        f"MLflow tracking at {mask_uri(uri)} is unreachable{what}: {type(e).__name__}: {said}"
    )


# Default ports of the tracking URIs that name a server; other schemes (sqlite, file, a local
# path, databricks) are not probed.
SERVER_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432, "mysql": 3306}


def check_reachable(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """Raise ``TrackingUnavailable`` unless something accepts a TCP connection at the server the
    URI names, within ``timeout_s``; returns ``host:port`` (``None`` for a local store).

    MLflow's own client would retry with backoff and a long timeout per try before saying
    anything; a command that only reads (``status``, ``doctor``) asks this first and fails in
    seconds, naming the (masked) URI.
    """
    import socket
    from urllib.parse import urlsplit

    # Parsed from the masked form: a raw "/" in a password would otherwise split the URI wrong.
    parts = urlsplit(mask_uri(tracking_uri))
    default = SERVER_PORTS.get(parts.scheme.lower().split("+", 1)[0])
    if default is None or not parts.hostname:
        return None
    try:
        port = parts.port or default
    except ValueError:
        raise TrackingUnavailable(
            f"MLflow tracking at {mask_uri(tracking_uri)}: the port is not a number"
        ) from None
    where = f"{parts.hostname}:{port}"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return where
    except OSError as e:
        why = (
            f"no answer within {timeout_s:g} s"
            if isinstance(e, TimeoutError)
            else f"{type(e).__name__}: {e}"
        )
        raise TrackingUnavailable(
            f"MLflow tracking at {mask_uri(tracking_uri)} is unreachable: nothing accepted a "
            f"connection at {where} ({why}); start the server or set MLFLOW_TRACKING_URI"
        ) from None


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
        raise unavailable(c, e, f"opening experiment {name}") from None  # the cause echoes the URI


def start_run(c: Any, run_name: str, tags: Mapping[str, str], parent: str | None = None) -> str:
    exp = experiment_id(c)
    t = dict(tags) | ({"mlflow.parentRunId": parent} if parent else {})
    return c.create_run(exp, run_name=run_name, tags=t).info.run_id


def dagster_tags(run_id: str, asset_key: str, partition: str | None = None) -> dict[str, str]:
    """The tags every MLflow run (and logged model) carries: which Dagster run made it, and how.

    ``asset_key`` is the key as a user reads it (``yolo_model``, ``a/b``); ``partition`` is empty
    for an unpartitioned asset, so the three tags are always there to search on.
    """
    return {
        "dagster_run_id": run_id,
        "dagster_asset_key": asset_key,
        "dagster_partition": partition or "",
    }


DATASET_NAME = "training_dataset"


def log_dataset_input(
    c: Any,
    run_id: str,
    dataset_version: str,
    samples_uri: str,
    n_images: int,
    *,
    name: str = DATASET_NAME,
    context: str = "training",
    splits: Mapping[str, int] | None = None,
    classes: Sequence[str] | None = None,
) -> None:
    """Record the dataset ``run_id`` trained on as an MLflow dataset input.

    The dataset is metadata only (a ``MetaDataset``: no image is uploaded): its digest is the
    platform's dataset version, its source ``samples_uri`` (the samples table in the artifact
    store), and its profile the image count, the split sizes and the classes. The same version
    logged twice is one dataset in MLflow.

    Args:
        c: the client.
        run_id: the training run.
        dataset_version: the dataset's version (its digest in MLflow, at most 36 characters).
        samples_uri: where the dataset's table of samples is stored.
        n_images: images in the dataset.
        name: the dataset's name in MLflow (the asset that made it).
        context: the ``mlflow.data.context`` input tag (``training``, ``evaluation``...).
        splits: images per split, e.g. ``{"train": 80, "val": 10, "test": 10}``.
        classes: the class names, in class-id order.
    """
    import json
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    with warnings.catch_warnings():
        # A local path matches both the "" and "file" schemes' sources, which are one class.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        source = resolve_dataset_source(samples_uri)
    meta = MetaDataset(source, name=name, digest=dataset_version)
    d = meta.to_dict()
    profile = {"num_rows": int(n_images)}
    profile |= {"splits": {k: int(v) for k, v in splits.items()}} if splits else {}
    profile |= {"classes": list(classes)} if classes else {}
    entity = Dataset(
        name=d["name"],
        digest=d["digest"],
        source_type=d["source_type"],
        source=d["source"],
        profile=json.dumps(profile),
    )
    tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)]
    c.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])


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
