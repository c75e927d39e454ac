"""The records the training assets hand downstream (stored as JSON by the IO manager):
``yolo_model``'s weights, ``model_evaluation``'s verdict and ``champion_model``'s champion."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from cv_assets.lib.core.store import StoredFile


class YoloModel(TypedDict):
    """Trained weights of one dataset version (``models/<key>/record.json``, plus ``reused``)."""

    key: str  # the training cache key: dataset version, params and warm start
    dataset_version: str
    classes: list[str]
    params: dict[str, Any]  # ``TrainParams.as_params()``
    weights: StoredFile
    mlflow_run_id: str
    epochs_run: int
    train_seconds: float
    device: str
    warm_start_sha256: str  # "" when trained from scratch
    val_map50: float
    val_map50_95: float
    reused: bool
    # Epochs a killed training had done before this one resumed it (0: none); older records lack it.
    resumed_after_epoch: NotRequired[int]
    # Only from a search (several trials): its table and the MLflow parent run.
    search_md: NotRequired[str]
    search_parent_run: NotRequired[str]


class GateVerdict(TypedDict):
    passed: bool
    reasons: list[str]
    interval: dict[str, Any] | None  # the paired-bootstrap interval of the difference
    class_changes: list[dict[str, Any]]


class ModelEvaluation(TypedDict):
    """Challenger and champion on the same test split, and the gate's verdict."""

    key: str  # the challenger's training key
    weights_sha256: str  # the weights that were scored
    dataset_version: str
    test_images: int
    challenger: dict[str, Any]  # ``DetectionMetrics.summary()``
    champion: dict[str, Any] | None  # the same, with ``version``; None without a champion
    gate: GateVerdict
    shadow: dict[str, Any] | None
    plots: dict[str, str]  # URI by plot name
    dagster_run_id: NotRequired[str]  # the run that judged (added by the asset)


class ChampionModel(TypedDict):
    """The current champion (``ModelVersion.as_dict()``) and the decision that made it so.

    Without a champion only ``version`` (None), ``status``, ``action`` and ``pending_version``
    are present.
    """

    version: str | None
    status: str
    action: str
    pending_version: str | None
    weights_uri: NotRequired[str]
    weights_sha256: NotRequired[str]
    dataset_version: NotRequired[str]
    mlflow_run_id: NotRequired[str]
    map50: NotRequired[float | None]
    map50_95: NotRequired[float | None]
    imgsz: NotRequired[int | None]
    class_names: NotRequired[list[str]]
    created_at: NotRequired[str]
    mobile: NotRequired[dict[str, str | None]]
    model_uri: NotRequired[str]
    metrics: NotRequired[dict[str, float]]
