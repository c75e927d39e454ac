"""Training, evaluation and the gate, as plain functions the assets call.

A training is identified by its cache key: the dataset version, the training parameters and the
training code version. Re-materialising with the same key reuses the stored weights instead of
training again (unless forced): the expensive step never repeats by accident.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.metrics import DetectionMetrics, evaluate_detections, read_yolo_truth
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.dataset.snapshot import SPLITS, data_yaml, held_out_of_batches, test_split
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.bootstrap import paired_bootstrap
from cv_assets.lib.training.checkpoints import Checkpoints, Resume
from cv_assets.lib.training.gate import GateDecision, GateSettings, gate, shadow_verdict
from cv_assets.lib.training.records import ModelEvaluation, YoloModel
from cv_assets.lib.training.yolo import (
    TrainParams,
    predict_yolo,
    resolve_device,
    train_yolo,
    verified_weights,
)

TRAIN_CODE_VERSION = "1"

log = logging.getLogger(__name__)


def cache_key(dataset_version: str, params: TrainParams, warm_start_sha: str | None) -> str:
    body = {
        "dataset": dataset_version,
        "params": params.as_params(),
        "code": TRAIN_CODE_VERSION,
        "warm_start": warm_start_sha,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def localize_dataset(store: ArtifactStore, dataset: TrainingDataset, cache: Path) -> Path:
    """A data.yaml whose file lists name local images (with their labels beside them)."""
    if not store.is_s3:
        return Path(store.uri(dataset["data_yaml_key"]))
    samples = pd.read_parquet(local_file(store, dataset["samples"]["uri"], cache))
    root = cache / "datasets" / dataset["version"]
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = samples[samples["split"] == split]
        paths = []
        for img, lab in zip(rows["image_uri"], rows["label_uri"], strict=True):
            paths.append(str(local_file(store, img, cache)))
            local_file(store, lab, cache)
        (root / f"{split}.txt").write_text("\n".join(paths) + "\n")
    (root / "data.yaml").write_text(data_yaml(dataset["classes"], str(root)))
    return root / "data.yaml"


def _epoch(
    client: Any,
    run_id: str,
    epoch: int,
    row: dict[str, float],
    progress: Callable[[int, dict[str, float]], None] | None,
) -> None:
    tracking.log_metrics(client, run_id, row, step=epoch)
    if progress is not None:
        progress(epoch, row)


@dataclass
class Evaluated:
    metrics: DetectionMetrics
    predictions: list[Any] = field(repr=False)
    truths: list[Any] = field(repr=False)
    images: list[str] = field(repr=False)


def evaluate_weights(
    weights: Path,
    sha256: str,
    images: Sequence[str],
    labels: Sequence[str],
    imgsz: int,
    n_classes: int,
    device: str = "auto",
) -> Evaluated:
    """Score weights on a set of images with the platform's own metric code (COCO's, with AP
    by object size measured in the model's input pixels)."""
    preds = predict_yolo(verified_weights(weights, sha256), images, imgsz, device=device)
    truths = [read_yolo_truth(Path(p).read_text()) for p in labels]
    sizes = input_sizes(images, imgsz)
    metrics = evaluate_detections(preds, truths, n_classes, image_sizes=sizes)
    return Evaluated(metrics, preds, truths, list(images))


def input_sizes(images: Sequence[str], imgsz: int) -> list[tuple[float, float]]:
    """Each image's width and height in the model's input pixels: prediction letterboxes the long
    side to ``imgsz``, so that is where "small" (< 32 px squared) is small for the model."""
    from PIL import Image

    out = []
    for p in images:
        with Image.open(p) as im:  # the header only: no decode
            w, h = im.size
        r = imgsz / max(w, h)
        out.append((w * r, h * r))
    return out


def train_and_record(
    store: ArtifactStore,
    dataset: TrainingDataset,
    params: TrainParams,
    mlflow_client: Any,
    *,
    force: bool = False,
    warm_start: tuple[Path, str] | None = None,
    code_version: str = "",
    parent_run: str | None = None,
    run_name: str = "yolo_model",
    run_tags: dict[str, str] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> YoloModel:
    """Train (or reuse) weights for ``dataset`` and return their record.

    The record (``models/<key>/record.json``) is written only after the weights are safely in the
    store, so a training killed half-way leaves nothing that looks finished; it leaves its newest
    checkpoint (``checkpoints.py``), and the next training of the same key resumes from it, in
    the same MLflow run. ``say`` hears what a user should know: a resume, a refused checkpoint.
    """
    tell = say or log.warning
    key = cache_key(dataset["version"], params, warm_start[1] if warm_start else None)
    record_key = layout.model_record(key)
    ckpts = Checkpoints(store, key)
    if store.exists(record_key) and not force:
        stored: YoloModel = json.loads(store.get_bytes(record_key))
        stored["reused"] = True
        return stored

    tags = {
        "dataset_version": dataset["version"],
        "code_version": code_version or TRAIN_CODE_VERSION,
        "cache_key": key,
        "warm_start_sha256": warm_start[1] if warm_start else "",
    }
    device = resolve_device(params.device)
    with scratch_dir("train") as tmp:
        resume = ckpts.find(Path(tmp) / "checkpoint", tell)
        run_id = _open_run(mlflow_client, resume, run_name, tags | (run_tags or {}), parent_run)
        if resume is not None and run_id == resume.mlflow_run_id:
            tell(f"resuming training {key} after epoch {resume.epochs_done} of {params.epochs}, "
                 f"in MLflow run {run_id}")  # fmt: skip
        else:
            _log_inputs(mlflow_client, run_id, dataset, params, device)

        def checkpoint(done: int, last: Path, best: Path | None) -> None:
            # The final epoch's is not kept: a kill after it repeats only that epoch, and
            # Ultralytics cannot resume a training whose epochs are all done.
            if done < params.epochs:
                ckpts.save(done, last, best, run_id)

        try:
            data = localize_dataset(store, dataset, Path(tmp) / "cache")
            out = train_yolo(
                data,
                Path(tmp) / "runs",
                params,
                on_epoch=lambda ep, row: _epoch(mlflow_client, run_id, ep, row, progress),
                warm_start=verified_weights(*warm_start) if warm_start and not resume else None,
                resume=(resume.last, resume.best) if resume else None,
                on_checkpoint=checkpoint,
            )
            weights = store.put_file(layout.model_weights(key), out.weights)
            mlflow_client.log_artifact(run_id, str(out.weights), "weights")
            for extra in ("results.csv", "args.yaml"):
                if (out.run_dir / extra).exists():
                    mlflow_client.log_artifact(run_id, str(out.run_dir / extra))
        except BaseException as e:
            mlflow_client.set_terminated(run_id, getattr(e, "mlflow_status", "FAILED"))
            raise
    val = {
        "val_map50": out.metrics.get("metrics/mAP50(B)", 0.0),
        "val_map50_95": out.metrics.get("metrics/mAP50-95(B)", 0.0),
    }
    record: YoloModel = {
        "key": key,
        "dataset_version": dataset["version"],
        "classes": dataset["classes"],
        "params": params.as_params(),
        "weights": weights.as_dict(),
        "mlflow_run_id": run_id,
        "epochs_run": out.epochs,
        "train_seconds": round(out.seconds, 1),
        "device": device,
        "warm_start_sha256": tags["warm_start_sha256"],
        "val_map50": val["val_map50"],
        "val_map50_95": val["val_map50_95"],
        "resumed_after_epoch": resume.epochs_done if resume else 0,
        "reused": False,
    }
    tracking.log_metrics(mlflow_client, run_id, val, step=out.epochs)
    mlflow_client.set_terminated(run_id, "FINISHED")
    # The stored record never says "reused": that is what a later read of it adds.
    stored_form = {k: v for k, v in record.items() if k != "reused"}
    store.put_bytes(record_key, json.dumps(stored_form, indent=1).encode())
    ckpts.clear()
    return record


def _open_run(
    client: Any, resume: Resume | None, name: str, tags: dict[str, str], parent: str | None
) -> str:
    """The resumed training's MLflow run, open again; else a new run."""
    if resume is not None:
        try:
            client.update_run(resume.mlflow_run_id, status="RUNNING")
        except Exception as e:  # deleted, or another tracking server: the curves start anew
            log.warning("MLflow run %s of the checkpoint: %s; a new run", resume.mlflow_run_id, e)
        else:
            for k, v in (tags | {"resumed_after_epoch": str(resume.epochs_done)}).items():
                client.set_tag(resume.mlflow_run_id, k, v)
            return resume.mlflow_run_id
    return tracking.start_run(client, name, tags, parent=parent)


def _log_inputs(
    client: Any, run_id: str, dataset: TrainingDataset, params: TrainParams, device: str
) -> None:
    tracking.log_dataset_input(
        client,
        run_id,
        dataset["version"],
        dataset["samples"]["uri"],
        int(dataset["images"]),
        splits=dataset.get("counts"),
        classes=dataset["classes"],
    )
    tracking.log_params(
        client,
        run_id,
        params.as_params() | {"dataset_images": dataset["images"], "resolved_device": device},
    )


def evaluation_plots(ev: Evaluated, classes: Sequence[str], n_grid: int = 9) -> dict[str, bytes]:
    # matplotlib costs ~0.3 s to import: only an evaluation that draws pays it, not each code load.
    from cv_assets.lib.core.plots import confusion_matrix_png, pr_curve_png, prediction_grid_png

    m = ev.metrics
    shown = [
        (img, t, p[p[:, 4] >= 0.25])
        for img, t, p in list(zip(ev.images, ev.truths, ev.predictions, strict=True))[:n_grid]
    ]
    return {
        "pr_curve": pr_curve_png(m.recall_grid, m.precision_curves, m.ap50_per_class, classes),
        "confusion_matrix": confusion_matrix_png(m.confusion, classes),
        "predictions": prediction_grid_png(shown, classes),
    }


@dataclass
class ChallengerEvaluation:
    summary: dict[str, Any]
    champion: dict[str, Any] | None
    decision: GateDecision
    plots: dict[str, bytes]
    record: ModelEvaluation


def evaluate_challenger(
    store: ArtifactStore,
    dataset: TrainingDataset,
    challenger: YoloModel,
    champion: tuple[str, str, str, int | None] | None,
    settings: GateSettings,
    device: str = "auto",
    shadow_batches: Sequence[str] = (),
) -> ChallengerEvaluation:
    """Challenger and champion (version, weights URI, sha256, imgsz) on the same test split, and
    in shadow on the held-out images of the newest batches.

    Writes the plots and ``evaluation.json`` under ``evaluations/<challenger key>/``.
    """
    classes = dataset["classes"]
    with scratch_dir("eval") as tmp:
        cache = Path(tmp)
        images, labels = test_split(store, dataset, cache)

        def score(uri: str, sha: str, imgsz: int, on=(images, labels)) -> Evaluated:
            weights = local_file(store, uri, cache)
            return evaluate_weights(weights, sha, on[0], on[1], imgsz, len(classes), device)

        w = challenger["weights"]
        ev = score(w["uri"], w["sha256"], challenger["params"]["imgsz"])
        champ_ev = score(champion[1], champion[2], champion[3] or 160) if champion else None
        plots = evaluation_plots(ev, classes)
        shadow = None
        newest = held_out_of_batches(store, dataset, shadow_batches, cache)
        if newest[0]:
            s_ch = score(w["uri"], w["sha256"], challenger["params"]["imgsz"], newest)
            s_cp = score(champion[1], champion[2], champion[3] or 160, newest) if champion else None
            shadow = {
                "batches": list(shadow_batches),
                "images": len(newest[0]),
                "challenger": s_ch.metrics.summary(classes),
                "champion": s_cp.metrics.summary(classes) if s_cp else None,
            }
    interval = None
    if champ_ev is not None and settings.bootstrap_resamples > 0:
        # Both models on the same resamples of the test images: the difference's own noise.
        interval = paired_bootstrap(
            ev.predictions,
            champ_ev.predictions,
            ev.truths,
            len(classes),
            n_resamples=settings.bootstrap_resamples,
            confidence=settings.confidence,
        )
    decision = gate(
        ev.metrics,
        champ_ev.metrics if champ_ev else None,
        settings.min_map50,
        settings.epsilon,
        interval=interval,
        require_interval=settings.require_interval,
        class_epsilon=settings.class_epsilon,
        classes=classes,
    )
    decision = shadow_verdict(decision, shadow, settings.epsilon, settings.shadow_gate)
    summary = ev.metrics.summary(classes)
    champ_summary = champ_ev.metrics.summary(classes) if champ_ev else None
    refs = {
        k: store.put_bytes(layout.evaluation_plot(challenger["key"], k), png)
        for k, png in plots.items()
    }
    record: ModelEvaluation = {
        "key": challenger["key"],
        "weights_sha256": w["sha256"],
        "dataset_version": dataset["version"],
        "test_images": len(images),
        "challenger": summary,
        "champion": {"version": champion[0]} | champ_summary
        if champion and champ_summary
        else None,
        "gate": {
            "passed": decision.passed,
            "reasons": decision.reasons,
            "interval": decision.interval,
            "class_changes": decision.class_changes,
        },
        "shadow": shadow,
        "plots": {k: r.uri for k, r in refs.items()},
    }
    store.put_bytes(
        layout.evaluation_record(challenger["key"]), json.dumps(record, indent=1).encode()
    )
    return ChallengerEvaluation(summary, champ_summary, decision, plots, record)
