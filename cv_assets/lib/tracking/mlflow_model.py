"""The detector as an MLflow 3 logged model, and its ``python_function`` loader.

What the registry hands an MLflow user. One logged model per (weights, ONNX file) pair, linked
to the training run as its output; ``log_detector_model`` returns its ``models:/<model_id>`` URI,
which ``Registry.register`` turns into a version whose files are this model's. Its directory:

- ``model.onnx``: the app's fp32 ONNX file, byte for byte (the ``onnx`` flavor's data), so
  ``mlflow.onnx.load_model(uri)`` gives the ``onnx.ModelProto`` the app ships;
- ``extra_files/best.pt``: the PyTorch weights it was exported from (``onnx`` flavor, key
  ``extra_files``), for fine-tuning or re-export;
- ``MLmodel``: both flavors, the signature, the input example and the metadata
  (``class_names``, ``imgsz``, the weights' and the ONNX file's sha256, the dataset version and
  the platform version: the identity of what was trained; the registry's version number is given
  only after logging, and the version's tags point back here).

Evaluation metrics are MLflow metrics of the logged model and of its run, never tags.

**The pyfunc is ``cv-assets predict``, not the raw tensor.** Its ``python_function`` flavor's
``loader_module`` is this module (so loading it needs the ``cv_assets`` package; the ``onnx``
flavor needs only onnx). It runs the file in onnxruntime through the platform's own pre- and
post-processing (:mod:`cv_assets.lib.core.onnx_detect`: square letterbox, best class per anchor,
class-aware NMS; for an end-to-end head such as YOLO26's, its final detections and no NMS), so it
gives exactly the detections ``cv-assets predict`` prints.

- **Input:** a DataFrame with one column ``image``, one row per image, each an encoded JPEG or
  PNG file (``bytes``; base64 in a JSON serving request). A ``str`` is read as a local file path,
  for convenience. Encoded images rather than the preprocessed ``(1, 3, imgsz, imgsz)`` tensor:
  boxes can be mapped back to the original image only by the code that letterboxed it, and a
  user holds pictures, not tensors. (The tensor interface is the ``onnx`` flavor's.)
- **Params:** ``conf`` (0.25), ``iou`` (0.7), ``max_det`` (300), as in ``cv-assets predict``.
- **Output:** a DataFrame with one row per detection: ``image`` (the input row's position),
  ``x1``, ``y1``, ``x2``, ``y2`` (pixels of the original image), ``confidence``, ``class_id``,
  ``class_name``; an image without detections has no rows. ``cv-assets predict`` prints the same
  numbers rounded (boxes to 0.1 px, confidence to 4 places).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cv_assets.lib.core.onnx_detect import ImageUnreadable, OnnxDetector, read_image
from cv_assets.lib.tracking import runs as tracking

log = logging.getLogger(__name__)

MODEL_NAME = "detector"  # the logged model's name in its experiment
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "best.pt"
COLUMNS: list[str] = ["image", "x1", "y1", "x2", "y2", "confidence", "class_id", "class_name"]
PARAMS = {"conf": 0.25, "iou": 0.7, "max_det": 300}
# The interpreter packages the pyfunc imports (exact versions: MLflow warns on a mismatch).
REQUIREMENTS = ("mlflow", "onnx", "onnxruntime", "numpy", "pandas", "opencv-python", "cv_assets")


class ModelInputError(ValueError):
    """An input row the pyfunc cannot read; the message names the row."""


# --- logging -------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def detector_signature() -> Any:
    """The pyfunc's contract: encoded images in, one row per detection out, NMS settings."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec

    out: list[ColSpec | TensorSpec] = [ColSpec(DataType.long, "image")]
    out += [ColSpec(DataType.double, k) for k in ("x1", "y1", "x2", "y2", "confidence")]
    out += [ColSpec(DataType.long, "class_id"), ColSpec(DataType.string, "class_name")]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, "image")]),
        outputs=Schema(out),
        params=ParamSchema([
            ParamSpec("conf", DataType.double, PARAMS["conf"]),
            ParamSpec("iou", DataType.double, PARAMS["iou"]),
            ParamSpec("max_det", DataType.long, PARAMS["max_det"]),
        ]),
    )  # fmt: skip


def example_image(imgsz: int) -> bytes:
    """A PNG for the input example: a grey square of the model's input size with one shape."""
    import cv2

    img = np.full((imgsz, imgsz, 3), 114, np.uint8)
    q = max(imgsz // 4, 1)
    cv2.rectangle(img, (q, q), (imgsz - q, imgsz - q), (40, 160, 220), thickness=-1)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in REQUIREMENTS:
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def onnx_input(path: Path) -> tuple[str, list[int]]:
    """The ONNX file's image input (name, shape); a file that is not a detector is refused."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if len(graph.input) != 1:
        raise ValueError(f"{path}: expected one image input, found {len(graph.input)}")
    inp = graph.input[0]
    shape = [d.dim_value or -1 for d in inp.type.tensor_type.shape.dim]
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"{path}: input {inp.name} has shape {shape}, expected (N, 3, H, W)")
    return inp.name, shape


def save_detector_model(
    target: Path,
    onnx_path: Path,
    weights_path: Path,
    metadata: dict[str, Any],
    mlflow_model: Any = None,
) -> None:
    """Write the model directory at ``target`` (see the module docstring); no MLflow server."""
    import mlflow.onnx
    import onnx
    from mlflow import pyfunc
    from mlflow.models import Model

    mlflow.onnx.save_model(
        onnx.load(str(onnx_path)),
        str(target),
        mlflow_model=mlflow_model,
        signature=detector_signature(),
        input_example=(pd.DataFrame({"image": [example_image(metadata["imgsz"])]}), PARAMS),
        pip_requirements=pip_requirements(),
        onnx_execution_providers=["CPUExecutionProvider"],
        metadata=metadata,
        save_as_external_data=False,
        extra_files=[str(weights_path)],
    )
    # The app's file itself, not a re-serialisation of it (its sha256 is in the metadata).
    shutil.copyfile(onnx_path, target / ONNX_FILE)
    # ``save_model`` gave the onnx flavor's own pyfunc (raw tensors); ours gives detections.
    model = Model.load(str(target / "MLmodel"))
    env = model.flavors[pyfunc.FLAVOR_NAME].get(pyfunc.ENV)
    pyfunc.add_to_model(model, loader_module=__name__, data=ONNX_FILE)
    if env:
        model.flavors[pyfunc.FLAVOR_NAME][pyfunc.ENV] = env
    model.save(str(target / "MLmodel"))


def _reusable(c: Any, experiment_id: str, weights_sha: str, onnx_sha: str) -> str | None:
    """A finished logged model of these exact files (a retried asset logs nothing twice)."""
    from mlflow.entities import LoggedModelStatus

    found = c.search_logged_models(
        [experiment_id],
        filter_string=f"tags.weights_sha256 = '{weights_sha}' AND tags.onnx_sha256 = '{onnx_sha}'",
    )
    # Filtered here: the SQL store does not match ``status = 'READY'`` (MLflow 3.17).
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_detector_model(
    c: Any,
    run_id: str,
    onnx_path: str | Path,
    weights_path: str | Path,
    *,
    class_names: Sequence[str],
    imgsz: int,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    dagster_tags: Mapping[str, str] | None = None,
    name: str = MODEL_NAME,
) -> str:
    """Log the detector of ``run_id`` as an MLflow logged model; returns its ``models:/`` URI.

    The model is created ``PENDING``, gets its files and metrics, and only then becomes
    ``READY``; a failure marks it ``FAILED``, so nothing half-logged is reused or registered.
    Logging the same two files again returns the existing model.

    Args:
        c: the client (``tracking.client``).
        run_id: the training run; the model is its output and lives in its experiment.
        onnx_path: the app's fp32 ONNX file (local).
        weights_path: the PyTorch weights it was exported from (local).
        class_names: class names in class-id order.
        imgsz: the square input size.
        metrics: evaluation metrics (``map50``, ``map50_95``, ``precision``, ``recall``...),
            logged on the model and on the run.
        tags: identity tags for the model (``dataset_version``...). A ``weights_sha256`` that
            the weights file does not hash to is refused.
        dagster_tags: ``tracking.dagster_tags(...)`` of the Dagster run that logs it.
        name: the logged model's name.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    onnx_path, weights_path = Path(onnx_path), Path(weights_path)
    weights_sha, onnx_sha = file_sha256(weights_path), file_sha256(onnx_path)
    given = dict(tags or {})
    if given.get("weights_sha256", weights_sha) != weights_sha:
        raise ValueError(
            f"{weights_path} hashes to {weights_sha}, its record says {given['weights_sha256']}"
        )
    input_name, shape = onnx_input(onnx_path)
    if shape[-1] > 0 and shape[-1] != imgsz:
        raise ValueError(f"{onnx_path}: input {input_name} is {shape[-1]} px, imgsz is {imgsz}")
    identity = {"weights_sha256": weights_sha, "onnx_sha256": onnx_sha}
    model_tags = given | dict(dagster_tags or {}) | identity
    metadata = {
        "class_names": list(class_names),
        "imgsz": int(imgsz),
        "onnx_input": {"name": input_name, "shape": shape},
        "dataset_version": given.get("dataset_version", ""),
        "cv_assets_version": _version("cv_assets"),
        "training_run_id": run_id,
        **identity,
    }
    try:
        experiment_id = c.get_run(run_id).info.experiment_id
        if reused := _reusable(c, experiment_id, weights_sha, onnx_sha):
            log.info("weights %s are logged model %s already", weights_sha[:12], reused)
            return f"models:/{reused}"
        lm = c.create_logged_model(
            experiment_id,
            name=name,
            source_run_id=run_id,
            tags=model_tags,
            params={"imgsz": str(imgsz), "classes": json.dumps(list(class_names))},
            model_type="object-detection",
        )
    except Exception as e:
        if tracking.is_missing(e):
            raise ValueError(f"MLflow at {c.tracking_uri} has no run {run_id}") from None
        raise tracking.unavailable(
            c, e, f"logging the model of run {run_id}"
        ) from None  # the cause echoes the URI unmasked
    try:
        with tempfile.TemporaryDirectory(prefix="cv_assets_model_") as tmp:
            target = Path(tmp) / "model"
            mm = Model(
                artifact_path=lm.artifact_location,
                model_uuid=lm.model_id,
                run_id=run_id,
                model_id=lm.model_id,
            )
            # Named ``best.pt`` in the model whatever the store calls the file.
            weights = Path(tmp) / "weights" / WEIGHTS_FILE
            weights.parent.mkdir()
            shutil.copyfile(weights_path, weights)
            save_detector_model(target, onnx_path, weights, metadata, mm)
            c.log_model_artifacts(lm.model_id, str(target))
        c.log_outputs(run_id, [LoggedModelOutput(lm.model_id, step=0)])
        ts = int(time.time() * 1000)
        ds = given.get("dataset_version")
        link = {"dataset_name": tracking.DATASET_NAME, "dataset_digest": ds} if ds else {}
        # One write: run metrics that are also the logged model's (MLflow 3 links them by id).
        rows = [
            Metric(k, float(v), ts, 0, model_id=lm.model_id, **link) for k, v in metrics.items()
        ]
        c.log_batch(run_id, metrics=rows)
        c.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    except BaseException as e:
        _mark_failed(c, lm.model_id)
        if isinstance(e, MlflowException):
            raise tracking.unavailable(
                c, e, f"logging model {lm.model_id}"
            ) from None  # the cause echoes the URI unmasked
        raise
    return f"models:/{lm.model_id}"


def _mark_failed(c: Any, model_id: str) -> None:
    try:
        c.finalize_logged_model(model_id, "FAILED")
    except Exception:  # the server that failed may refuse this too; PENDING is not READY either
        log.warning("could not mark logged model %s FAILED", model_id)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


# --- loading (mlflow.pyfunc.load_model) ----------------------------------------------------


class DetectorModel:
    """The pyfunc: encoded images in, detections out (see the module docstring)."""

    def __init__(self, onnx_path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:

        self.detector = OnnxDetector(onnx_path)
        self.metadata = dict(metadata or {})
        # The file's own names first, as ``cv-assets predict`` reads them.
        self.class_names = self.detector.class_names or list(self.metadata.get("class_names", []))

    def _image(self, row: int, value: Any) -> np.ndarray:

        try:
            if isinstance(value, str):
                return read_image(value)
            if isinstance(value, (bytes, bytearray, memoryview)):
                return read_image(f"row {row}", bytes(value))
        except ImageUnreadable as e:
            raise ModelInputError(f"image {e}") from None
        raise ModelInputError(
            f"image row {row}: expected encoded image bytes or a file path, got "
            f"{type(value).__name__}"
        )

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = PARAMS | dict(params or {})
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise ModelInputError(
                    f"input has columns {list(model_input.columns)}; expected one named 'image'"
                )
            values = model_input["image"].tolist()
        elif isinstance(model_input, (str, bytes)):
            values = [model_input]
        else:
            values = list(model_input)
        rows: list[tuple[Any, ...]] = []
        for i, value in enumerate(values):
            img = self._image(i, value)
            h, w = img.shape[:2]
            boxes = self.detector.detect(
                img, conf=float(p["conf"]), iou=float(p["iou"]), max_det=int(p["max_det"])
            )
            # As ``cv-assets predict`` computes them: float32 -> Python float, then pixels.
            for x1, y1, x2, y2, conf, k in boxes.tolist():
                cls = int(k)
                name = self.class_names[cls] if cls < len(self.class_names) else str(cls)
                rows.append((i, x1 * w, y1 * h, x2 * w, y2 * h, conf, cls, name))
        out = pd.DataFrame(rows, columns=pd.Index(COLUMNS))
        return out.astype({"image": "int64", "class_id": "int64", "class_name": "object"} | {
            k: "float64" for k in ("x1", "y1", "x2", "y2", "confidence")
        })  # fmt: skip


def _load_pyfunc(path: str, model_config: Any = None) -> DetectorModel:
    """MLflow's entry point: ``path`` is the flavor's data, the ONNX file in the model directory."""
    from mlflow.models import Model

    onnx_path = Path(path)
    if onnx_path.is_dir():
        onnx_path = onnx_path / ONNX_FILE
    meta = Model.load(str(onnx_path.parent / "MLmodel")).metadata or {}
    return DetectorModel(onnx_path, meta)
