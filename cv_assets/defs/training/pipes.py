"""``yolo_model``'s training, run as an external process through Dagster Pipes.

The asset launches ``cv_assets.training_worker`` through the ``pipes`` resource, a
``TrainingLauncher`` (``resources/training.py``): a subprocess by default, a Kubernetes GPU pod or
an ECS task when ``CV_ASSETS_TRAINING_LAUNCHER`` says so, while the rest of the job stays where it
is. What to train travels as Pipes extras; the secrets (MLflow's tracking URI, the S3 endpoint)
only as environment variables of the process (a pod's or task's from its own spec), never in the
extras file. The worker's epochs appear in the run log; its record
comes back by key and hash through the artifact store.
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.training.records import YoloModel
from cv_assets.resources.training import TrainingLauncher


class TrainingRetryable(Exception):
    """Worth a retry of the step: the worker could not reach the tracking server, or was killed
    (its checkpoint resumes it: no need to wait, ``wait_s`` 1)."""

    def __init__(self, message: str, wait_s: int = 5) -> None:
        super().__init__(message)
        self.wait_s = wait_s


def result_key(run_id: str, attempt: int = 0) -> str:
    """Where the worker of a run's ``attempt`` (the step's retry number) leaves its record, and
    ``.error`` its failure: one per attempt, so a retry never reads an earlier attempt's."""
    return f"training/results/{run_id}-{attempt}.json"


def train_in_worker(
    context: dg.AssetExecutionContext,
    pipes: TrainingLauncher,
    store: ArtifactStore,
    env: dict[str, str],
    extras: dict[str, Any],
) -> YoloModel:
    """Runs the worker on ``extras`` (the training) and returns the record it stored."""
    key = result_key(context.run.run_id, context.retry_number)
    error_key = f"{key}.error"
    try:
        done = pipes.run(context, extras | {"result_key": key}, env)
    except Exception as e:
        # Any Pipes client (subprocess, Kubernetes, ECS) says only that the process failed; the
        # worker leaves its error beside the result, so the step fails with the worker's words.
        if store.exists(error_key):
            err = json.loads(store.get_bytes(error_key))
            if err.get("retryable"):
                raise TrainingRetryable(err["message"]) from e
            # The worker's own failure (bad data, a search with no feasible trial) repeats on a
            # retry: the step fails for good, with the search's table when there was one.
            md = err.get("search_md")
            table = {"search": dg.MetadataValue.md(md)} if md else {}
            raise dg.Failure(
                description=f"the training process failed: {err['message']}",
                metadata={"exit": str(e), "traceback": dg.MetadataValue.text(err["traceback"])}
                | table,
                allow_retries=False,
            ) from e
        # No word from the worker: it was killed (SIGKILL, the OOM killer, a lost pod). Its
        # newest checkpoint is in the store, and the step's retry resumes from it.
        raise TrainingRetryable(
            f"the training process ended without reporting ({e}); the retry resumes it from its "
            "newest checkpoint",
            wait_s=1,
        ) from e
    (msg,) = [m for m in done.get_custom_messages() if isinstance(m, dict) and "record_key" in m]
    ref = {"uri": store.uri(msg["record_key"]), "sha256": msg["record_sha256"],
           "size": msg["record_size"]}  # fmt: skip
    rec: YoloModel = json.loads(store.verify(ref))
    if rec["weights"]["sha256"] != msg["weights_sha256"]:
        raise dg.Failure(f"the training record at {ref['uri']} names other weights than reported")
    return rec


def worker_extras(
    dataset: TrainingDataset,
    params: dict[str, Any],
    search: dict[str, Any],
    *,
    store: ArtifactStore,
    artifact_root: str | None,
    force: bool,
    warm_start: tuple[str, str] | None,
    code_version: str,
    run_tags: dict[str, str],
) -> dict[str, Any]:
    """What the worker trains: JSON, with no secret in it (see the module docstring)."""
    return {
        "dataset": dict(dataset),
        "params": params,
        "search": search,
        "store_root": store.root,
        "artifact_root": artifact_root,
        "force": force,
        "warm_start": list(warm_start) if warm_start else None,  # the champion's (URI, sha256)
        "code_version": code_version,
        "run_tags": run_tags,
    }
