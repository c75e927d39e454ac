"""Model files made by hand, and the printed form of a model's detections."""

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper


def head_output(boxes_xywh, scores, nc: int = 3) -> np.ndarray:
    """A head output (4 + nc, N) with one anchor per given box; ``scores`` are (class, score)."""
    raw = np.zeros((4 + nc, len(boxes_xywh)), np.float32)
    for i, (b, (cls, s)) in enumerate(zip(boxes_xywh, scores, strict=True)):
        raw[:4, i] = b
        raw[4 + cls, i] = s
    return raw


def end2end_output(rows, k: int = 21) -> np.ndarray:
    """An end-to-end head's output (k, 6): the given ``(x1, y1, x2, y2, score, class)`` rows,
    then zero rows (score 0) up to k, as its top-k returns them."""
    raw = np.zeros((k, 6), np.float32)
    raw[: len(rows)] = rows
    return raw


def constant_detector(path: Path, imgsz: int = 32) -> Path:
    """A real ONNX file whose head always reports one 'circle' box in the centre."""
    raw = head_output(
        [(imgsz / 2, imgsz / 2, imgsz / 2, imgsz / 2), (1, 1, 1, 1)], [(1, 0.9), (0, 0.01)]
    )
    return constant_model(path, raw, imgsz)


def constant_end2end_detector(path: Path, imgsz: int = 32, stamped: bool = True) -> Path:
    """A real ONNX file whose end-to-end head always reports two overlapping 'circle' boxes in
    the centre and a weak 'square'; ``stamped``: its metadata says ``end2end`` as Ultralytics'
    export does (else only its output's shape tells)."""
    q = imgsz / 4
    rows = [
        (q, q, 3 * q, 3 * q, 0.9, 1),
        (q + 1, q, 3 * q + 1, 3 * q, 0.8, 1),
        (0, 0, 2, 2, 0.01, 0),
    ]
    return constant_model(path, end2end_output(rows), imgsz, {"end2end": "True"} if stamped else {})


def constant_model(
    path: Path, raw: np.ndarray, imgsz: int, props: dict[str, str] | None = None
) -> Path:
    """A real ONNX file whose output ``(1, *raw.shape)`` is always ``raw``, whatever the image."""
    const = helper.make_tensor("c", TensorProto.FLOAT, (1, *raw.shape), raw.ravel().tolist())
    zero = helper.make_tensor("z", TensorProto.FLOAT, (), [0.0])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "z"], ["m0"]),
        helper.make_node("Add", ["c", "m0"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "const",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, 3, imgsz, imgsz))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, (1, *raw.shape))],
        initializer=[const, zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="names", value="{0: 'square', 1: 'circle', 2: 'triangle'}")
    for k, v in (props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


class RunsAShellCommand:
    """What an attacker who can write the bucket would upload as ``best.pt``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def as_printed(out: Any, image: int) -> list[dict]:
    """The pyfunc's rows for one image, in the form and rounding `cv-assets predict` prints."""
    return [
        {
            "class_id": int(r.class_id),
            "class": r.class_name,
            "confidence": round(r.confidence, 4),
            "box_xyxy": [round(v, 1) for v in (r.x1, r.y1, r.x2, r.y2)],
        }
        for r in out[out["image"] == image].itertuples()
    ]
