"""Live accuracy of the champion: its mAP on each landed batch, judged against its test mAP.

Landed batches carry labels, so the champion's real accuracy on new data can be measured instead
of guessed from drift. The champion's ONNX fp32 file predicts on the batch's accepted images and
the same metric code as the test evaluation (``lib/core/metrics.py``, through
``lib/mobile/export.py``'s
``predict_files`` at the evaluation's thresholds) scores it, so the batch mAP50 and the test
mAP50 compare like with like. A batch inside the champion's training dataset is measured but never
judged: the model learnt from it, so a good score there proves nothing about live performance.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.metrics import DetectionMetrics, evaluate_detections, read_yolo_truth
from cv_assets.lib.core.onnx_detect import predict_files
from cv_assets.lib.core.store import ArtifactStore

# The thresholds of the test evaluation: a batch mAP at any other confidence cut would not be
# comparable with the champion's test mAP it is judged against.
EVAL_CONF = 0.001
EVAL_IOU = 0.7


def judge_degradation(
    batch_map50: float,
    champion_test_map50: float | None,
    *,
    n_images: int,
    margin: float = 0.10,
    min_images: int = 20,
    n_instances: int | None = None,
    in_training_data: bool = False,
) -> tuple[bool, str]:
    """``(degraded, reason)``: has the champion's mAP50 on a batch fallen too far below its test?

    Args:
        margin: absolute mAP50 the batch may fall below the test mAP50 before it is degraded.
        min_images: fewer images than this are too few to judge (the mAP of 5 images is noise).
        n_instances: labelled objects in the batch; with none, mAP is undefined, not 0.
        in_training_data: the batch is in the champion's training dataset, so never degraded.
    """
    got = f"batch mAP50 {batch_map50:.3f}"
    if in_training_data:
        return False, f"{got}: not judged, the batch is in the champion's training dataset"
    if n_images < min_images:
        return False, f"{got}: not judged, {n_images} images (min_images {min_images})"
    if n_instances == 0:
        return False, f"{got}: not judged, the batch's labels hold no objects"
    if champion_test_map50 is None:
        return False, f"{got}: not judged, the champion has no test mAP50 in the registry"
    drop = champion_test_map50 - batch_map50
    rule = f"{drop:.3f} below the champion's test mAP50 {champion_test_map50:.3f}"
    # Rounded so that a drop of exactly the margin (0.8 - 0.7 is 0.10000000000000009) is not one.
    if round(drop, 9) > margin:
        return True, f"degraded: {got} is {rule} (margin {margin:.3f})"
    return False, f"ok: {got} is {rule} (within margin {margin:.3f})"


@dataclass
class BatchPerformance:
    batch_id: str
    classes: list[str]
    metrics: DetectionMetrics = field(repr=False)
    champion_test_map50: float | None
    in_training_data: bool
    degraded: bool
    reason: str

    @property
    def drop(self) -> float | None:
        """Test mAP50 minus batch mAP50: positive when the champion does worse on the batch."""
        if self.champion_test_map50 is None:
            return None
        return self.champion_test_map50 - self.metrics.map50

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        drop = self.drop
        return {
            "batch_id": self.batch_id,
            "map50": round(m.map50, 4),
            "map50_95": round(m.map50_95, 4),
            "precision": round(m.precision, 4),
            "recall": round(m.recall, 4),
            "images": m.n_images,
            "instances": int(sum(m.n_instances)),
            "champion_test_map50": self.champion_test_map50,
            "drop": None if drop is None else round(drop, 4),
            "in_training_data": self.in_training_data,
            "degraded": self.degraded,
            "reason": self.reason,
        }

    def per_class(self) -> list[dict[str, Any]]:
        m = self.metrics
        rows = zip(self.classes, m.n_instances, m.ap50_per_class, m.ap_per_class, strict=True)
        return [
            {"class": c, "instances": n, "ap50": round(a50, 4), "ap50_95": round(a, 4)}
            for c, n, a50, a in rows
        ]


def _parquet(store: ArtifactStore, uri: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(uri))))


def training_batches(store: ArtifactStore, dataset_version: str) -> set[str]:
    """The batches a dataset version was built from (those with at least one accepted image)."""
    key = layout.dataset_samples(dataset_version)
    if not store.exists(key):
        raise ValueError(
            f"{store.uri(key)}: missing, so the batches of dataset {dataset_version} are unknown"
        )
    return {str(b) for b in _parquet(store, store.uri(key))["batch_id"].unique()}


def evaluate_onnx(
    detector: Path,
    images: Sequence[str],
    truths: Sequence[Any],
    n_classes: int,
    conf: float = EVAL_CONF,
    iou: float = EVAL_IOU,
) -> DetectionMetrics:
    """An ONNX detector's metrics on local images, with the evaluation's metric code."""
    return evaluate_detections(predict_files(detector, images, conf, iou), truths, n_classes)


def batch_performance(
    store: ArtifactStore,
    *,
    batch_id: str,
    samples_uri: str,
    detector_uri: str,
    dataset_version: str,
    classes: list[str],
    champion_test_map50: float | None,
    margin: float = 0.10,
    min_images: int = 20,
    max_images: int = 2000,
    conf: float = EVAL_CONF,
    iou: float = EVAL_IOU,
) -> BatchPerformance:
    """The champion's metrics on one batch's accepted samples, and whether they degraded.

    A batch with more than ``max_images`` accepted images is scored on the first ``max_images``
    by content hash: a fixed sample, the same on every run.
    """
    in_training = batch_id in training_batches(store, dataset_version)
    samples = _parquet(store, samples_uri).sort_values("sha256").head(max_images)
    truths = [
        read_yolo_truth(store.get_bytes(store.key_of(u)).decode()) for u in samples["label_uri"]
    ]
    with scratch_dir("performance") as tmp:
        cache = Path(tmp)
        detector = local_file(store, detector_uri, cache)
        images = [str(local_file(store, u, cache)) for u in samples["image_uri"]]
        metrics = evaluate_onnx(detector, images, truths, len(classes), conf, iou)
    degraded, reason = judge_degradation(
        metrics.map50,
        champion_test_map50,
        n_images=metrics.n_images,
        margin=margin,
        min_images=min_images,
        n_instances=int(sum(metrics.n_instances)),
        in_training_data=in_training,
    )
    return BatchPerformance(
        batch_id, list(classes), metrics, champion_test_map50, in_training, degraded, reason
    )
