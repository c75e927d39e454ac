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


def constant_detector(path: Path, imgsz: int = 32) -> Path:
    """A real ONNX file whose head always reports one 'circle' box in the centre."""
    raw = head_output(
        [(imgsz / 2, imgsz / 2, imgsz / 2, imgsz / 2), (1, 1, 1, 1)], [(1, 0.9), (0, 0.01)]
    )
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
