"""The training as an external process: ``python -m cv_assets.training_worker``, launched
by ``yolo_model`` through Dagster Pipes (``PipesSubprocessClient`` by default; a Kubernetes or ECS
Pipes client runs the same module in a pod or task).

It imports no Dagster beyond ``dagster-pipes``, so a GPU image needs only the training stack; it
sits beside ``cv_assets/telemetry``, outside ``lib/``, which imports no Dagster at all. It reads
what to train from the Pipes extras (the dataset record, the training parameters, the search, the
warm start, the store), and MLflow's tracking URI (and ``CV_ASSETS_OPTUNA_STORAGE``, where a
search keeps its study) from its environment. It trains as the in-process code did
(``train_searching``: MLflow runs, weights and their record in the artifact store; a search's
Optuna study), and reports back through Pipes:

- each epoch as a log line in the Dagster run (losses, validation mAP), beside MLflow's curves;
- the result as a custom message, ``{"record_key", "record_sha256", "weights_sha256"}``: the
  record is in the store at the key the asset chose, and the asset reads it from there and checks
  its hash (artifacts travel as keys and hashes);
- a failure as ``<result key>.error`` in the store (its message, its traceback, and whether the
  tracking server was unreachable, which the step retries), before the process exits non-zero.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.search import Search, train_searching
from cv_assets.lib.training.studies import StudyStorageUnavailable, study_storage
from cv_assets.lib.training.yolo import TrainParams

# The environment variables the worker reads (the platform's names; resources/environment.py).
TRACKING_URI_VAR, S3_ENDPOINT_VAR = "MLFLOW_TRACKING_URI", "CV_ASSETS_S3_ENDPOINT_URL"
LAUNCHER_PID_VAR = "CV_ASSETS_LAUNCHER_PID"

SHOWN = (
    ("train/box_loss", "box"),
    ("train/cls_loss", "cls"),
    ("train/dfl_loss", "dfl"),
    ("metrics/mAP50(B)", "val mAP50"),
    ("metrics/mAP50-95(B)", "val mAP50-95"),
)


def epoch_line(epoch: int, epochs: int, row: dict[str, float]) -> str:
    """``epoch 3/21: box 1.234, cls 0.876, ..., val mAP50 0.451, val mAP50-95 0.301``."""
    parts = [f"{name} {row[key]:.3f}" for key, name in SHOWN if key in row]
    return f"epoch {epoch}/{epochs}: " + ", ".join(parts)


def run(pipes: PipesContext, store: ArtifactStore, x: dict[str, Any]) -> None:
    if not os.environ.get(TRACKING_URI_VAR):
        # A pod gets it from the ConfigMap cv-assets-env or the Secret cv-assets-training-env.
        raise RuntimeError(
            f"{TRACKING_URI_VAR} is not set in the training process's environment: give the "
            "training pod or task MLflow's tracking URI (deploy/helm/training-pod.yaml's envFrom)"
        )
    params = TrainParams(**x["params"])
    search = Search(**x["search"])
    # Beside MLflow's store (lib/training/studies.py), or CV_ASSETS_OPTUNA_STORAGE: both secrets
    # that only the environment carries.
    storage = study_storage(os.environ[TRACKING_URI_VAR], os.environ) if search.trials else None
    # The tracking URI may hold a password: it comes as an environment variable, never an extra.
    client = tracking.client(os.environ[TRACKING_URI_VAR])
    tracking.experiment_id(client, artifact_location=x.get("artifact_root"))
    # The champion's weights, fetched here (a pod has no share of the launcher's disk) and kept
    # until training has loaded them; train_and_record checks their hash.
    with scratch_dir("warm") as tmp:
        warm = None
        if x.get("warm_start"):
            uri, sha = x["warm_start"]
            warm = (local_file(store, uri, Path(tmp)), sha)
        rec = train_searching(
            store, x["dataset"], params, client,
            search, note=pipes.log.info, storage=storage,
            force=bool(x.get("force")), warm_start=warm, code_version=x.get("code_version", ""),
            run_tags=x.get("run_tags") or {},
            progress=lambda ep, row: pipes.log.info(epoch_line(ep, params.epochs, row)),
            say=pipes.log.warning,  # a resume, a refused checkpoint
        )  # fmt: skip
    # The record as this run got it (reused or not, a search's table): at the key the asset chose.
    ref = store.put_bytes(x["result_key"], json.dumps(rec, indent=1).encode())
    pipes.report_custom_message(
        {"record_key": x["result_key"], "record_sha256": ref.sha256, "record_size": ref.size,
         "weights_sha256": rec["weights"]["sha256"]}
    )  # fmt: skip


def die_with_launcher() -> None:
    """Linux: this process is killed when the process that launched it dies.

    A run worker killed with SIGKILL (an OOM kill, a lost node) cannot stop its children; a
    training left running would hold the CPU or GPU and could even write a record for a run that
    has failed. ``CV_ASSETS_LAUNCHER_PID`` is the launcher's pid, to catch a death before prctl.
    """
    launcher = os.environ.get(LAUNCHER_PID_VAR)
    if sys.platform != "linux" or not launcher:
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(launcher):  # it died before the call above
        os._exit(1)


def main() -> int:
    die_with_launcher()
    with open_dagster_pipes() as pipes:
        x: dict[str, Any] = dict(pipes.extras)
        endpoint = os.environ.get(S3_ENDPOINT_VAR) or None
        store = ArtifactStore(x["store_root"], s3_endpoint_url=endpoint)
        try:
            run(pipes, store, x)
        except Exception as e:
            # Beside the result: the asset fails with these words (Pipes itself reports only an
            # exit status), and asks for a retry when the tracking server was unreachable.
            error = {
                "message": f"{type(e).__name__}: {e}",
                "retryable": isinstance(e, tracking.TrackingUnavailable | StudyStorageUnavailable),
                "traceback": traceback.format_exc(),
                # A study that found no challenger: its table, for the step's metadata.
                "search_md": getattr(e, "search_md", ""),
            }
            store.put_bytes(f"{x['result_key']}.error", json.dumps(error, indent=1).encode())
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
