"""Converting trained weights for the app: ONNX fp32, static int8 (QDQ) and ONNX Runtime Mobile.

Decisions (README "Mobile files"):
- Static shape, batch 1: an app runs one camera frame at a time, and static shapes let ORT Mobile
  and the phone's NNAPI/CoreML execution providers plan memory ahead.
- The head's own output, no NMS added to the graph. A one-to-many head (YOLO11) returns
  ``(1, 4 + nc, anchors)``: boxes as centre/size in input pixels, then class scores, and the app
  runs NMS. An end-to-end head (YOLO26, exported with Ultralytics' ``nms=False``) returns its
  one-to-one branch's final detections ``(1, k, 6)``: ``x1, y1, x2, y2`` in input pixels, score,
  class, best first, k = min(300, anchors); the app runs no NMS. ``lib/core/onnx_detect.py`` is
  the reference post-processing of both.
- int8 quantizes every convolution (per-channel symmetric weights, calibrated activations) and
  keeps the head's decoding in float: the DFL softmax (YOLO11; YOLO26 has none), the box
  arithmetic, the sigmoid and the concat of pixel boxes with [0, 1] scores, which one int8 scale
  cannot hold both of; for an end-to-end head also its top-k selection and the gathers that
  carry class ids, which int8 would round to other classes.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cv_assets.lib.core.onnx_detect import OnnxDetector, letterbox, open_detector, read_image
from cv_assets.lib.training.yolo import prepare_ultralytics

log = logging.getLogger(__name__)

# 2: LiteRT and Core ML files; 3: LiteRT int8 keeps a float head; 4: end-to-end (YOLO26) heads,
# and every file's metadata says which head it has.
EXPORT_CODE_VERSION = "4"


class ExportFailed(RuntimeError):
    """A converter refused the model; the message carries the converter's own reason."""


@dataclass(frozen=True)
class QuantScheme:
    calibration_images: int = 64
    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    symmetric_activations: bool = False
    float_head: bool = True  # keep the head's decoding in float; False quantizes everything

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_onnx(weights: Path, imgsz: int, out_dir: Path, opset: int | None = None) -> Path:
    """Ultralytics' ONNX export (simplified with onnxslim), batch 1, on the CPU; no NMS added.

    ``nms=False`` asks Ultralytics for the NMS-free head where the model has one (YOLO26's
    one-to-one branch, the head ``predict_yolo`` evaluates); a one-to-many head exports as is.
    """

    prepare_ultralytics()
    from ultralytics import YOLO

    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / "model.pt"
    shutil.copyfile(weights, src)
    try:
        path = YOLO(str(src)).export(
            format="onnx",
            imgsz=imgsz,
            opset=opset,
            simplify=True,
            dynamic=False,
            batch=1,
            nms=False,
            device="cpu",
            verbose=False,
        )
    except Exception as e:  # the exporter's reason is what the user needs
        raise ExportFailed(f"ONNX export of {weights.name} (opset {opset}) failed: {e}") from e
    finally:
        src.unlink(missing_ok=True)
    if not path or not Path(path).is_file():
        raise ExportFailed(f"ONNX export of {weights.name} produced no file")
    return Path(path)


def stamp_metadata(path: Path, meta: dict[str, Any]) -> int:
    """Add the platform's metadata (JSON under ``cv_assets``) to an ONNX file; returns its opset."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    if "cv_assets" in props:
        props["cv_assets"].value = json.dumps(meta, sort_keys=True)
    else:
        model.metadata_props.add(key="cv_assets", value=json.dumps(meta, sort_keys=True))
    onnx.save(model, str(path))
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# The detect head's convolution branches: ``cv2`` for boxes, ``cv3`` for classes, and their
# ``one2one_`` twins in an end-to-end head (YOLO26), which is all that head keeps once fused.
HEAD_CONV_BRANCH = re.compile(r"/(one2one_)?cv[23]\.")


def head_float_nodes(path: Path) -> list[str]:
    """Nodes of the detect head that decode boxes and scores: these stay in float.

    The head is the module that produces the graph's output; its convolution branches
    (``HEAD_CONV_BRANCH``) are quantized like the rest of the network. What stays is the decoding:
    for YOLO11 the DFL, box arithmetic, sigmoid and concat; for YOLO26's end-to-end head the box
    arithmetic, sigmoid and concat, then the top-k, gathers and class-id arithmetic.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out = graph.output[0].name
    producer = next(n for n in graph.node if out in n.output)
    prefix = producer.name.rsplit("/", 1)[0] + "/"
    return [
        n.name
        for n in graph.node
        if n.name.startswith(prefix) and not HEAD_CONV_BRANCH.search(n.name)
    ]


def quantize_int8(fp32: Path, out: Path, calibration: Sequence[str], scheme: QuantScheme) -> Path:
    """Static int8 in QDQ format, calibrated on ``calibration`` (training images)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportFailed("int8 quantization needs calibration images; the dataset has none")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if scheme.method not in methods:
        raise ExportFailed(f"calibration method {scheme.method!r} is not one of {sorted(methods)}")

    class Calibration(CalibrationDataReader):
        """Letterboxed training images, exactly as the app will feed them."""

        def __init__(self, imgsz: int, input_name: str) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = (
                {input_name: letterbox(read_image(p), imgsz)[0]} for p in calibration
            )

        # onnxruntime's base declares ``-> dict``, but its calibrators stop on None (the protocol).
        def get_next(self) -> dict[str, np.ndarray] | None:  # pyright: ignore[reportIncompatibleMethodOverride]
            return next(self._it, None)

    pre = out.with_suffix(".pre.onnx")
    det = OnnxDetector(fp32)
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Calibration(det.imgsz, det.input_name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=scheme.per_channel,
            calibrate_method=methods[scheme.method],
            nodes_to_exclude=head_float_nodes(pre) if scheme.float_head else [],
            extra_options={
                "ActivationSymmetric": scheme.symmetric_activations,
                "WeightSymmetric": True,
                "CalibMovingAverage": scheme.method == "minmax",
            },
        )
    except ExportFailed:
        raise
    except Exception as e:
        raise ExportFailed(f"int8 quantization of {fp32.name} failed: {e}") from e
    finally:
        pre.unlink(missing_ok=True)
    log.info("int8 %s: %s, %d calibration images", out.name, scheme.method, len(calibration))
    return out


def convert_to_ort(onnx_path: Path, out_dir: Path) -> tuple[Path, str]:
    """An ``.ort`` file for ONNX Runtime Mobile, and the mobile usability checker's report."""
    import contextlib
    import io

    from onnxruntime.tools import convert_onnx_models_to_ort as conv
    from onnxruntime.tools.mobile_helpers import usability_checker

    out_dir.mkdir(parents=True, exist_ok=True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    checker_log = logging.getLogger("usability_checker")
    checker_log.addHandler(handler)
    checker_log.setLevel(logging.INFO)
    try:
        usability_checker.analyze_model(onnx_path, skip_optimize=False, logger=checker_log)
    except Exception as e:  # the report is advice; its absence must not block the export
        stream.write(f"usability checker could not analyse the model: {e}\n")
    finally:
        checker_log.removeHandler(handler)
    src = out_dir / onnx_path.name
    if src != onnx_path:
        shutil.copyfile(onnx_path, src)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            conv.convert_onnx_models_to_ort(
                src,
                output_dir=out_dir,
                optimization_styles=[conv.OptimizationStyle.Fixed],
                enable_type_reduction=False,
            )
    except Exception as e:
        raise ExportFailed(f"ORT format conversion of {onnx_path.name} failed: {e}") from e
    ort_files = sorted(out_dir.glob(f"{src.stem}*.ort"))
    if not ort_files:
        raise ExportFailed(f"ORT format conversion of {onnx_path.name} produced no .ort file")
    log.info("ORT Mobile file %s from %s", ort_files[0].name, onnx_path.name)
    return ort_files[0], stream.getvalue()


def latency_ms(path: Path, threads: int = 2, runs: int = 30, warmup: int = 5) -> float:
    """Median wall time of one batch-1 inference, preprocessing excluded."""
    det = open_detector(path, threads=threads)
    blob = np.random.default_rng(0).random((1, 3, det.imgsz, det.imgsz), dtype=np.float32)
    for _ in range(warmup):
        det.raw(blob)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.raw(blob)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
