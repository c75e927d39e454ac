"""The record ``mobile_model`` hands downstream (stored as JSON by the IO manager)."""

from __future__ import annotations

from typing import Any, TypedDict

from cv_assets.lib.core.store import StoredFile


class MobileModel(TypedDict):
    """A release of app files for one set of weights (``mobile/<key>/release.json``, plus
    ``reused``)."""

    key: str  # weights, imgsz, quantization scheme, opset and export code version
    weights_sha256: str
    dataset_version: str
    mlflow_run_id: str
    imgsz: int
    classes: list[str]
    files: dict[str, StoredFile]  # by format: onnx_fp32, onnx_int8, ort
    model_card: StoredFile
    usability_report: StoredFile
    summary: dict[str, Any]  # ``Release.summary()``: verdicts, budgets, app format
    reused: bool
