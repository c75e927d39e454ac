"""A hand-made ONNX detector whose answers depend on the frame, for the fleet's tests and benchmark.

An untrained YOLO scores every anchor with its initial bias (one constant confidence), which would
make the prediction columns of field drift meaningless. This graph is small and real instead: it
averages each quadrant of the input per channel and reports one box per quadrant, of the class
whose channel is brightest there, scored ``sigmoid(8 * (mean - 0.45))``. Darker frames give lower
confidences; colours decide the class mix. onnxruntime runs it through ``OnnxDetector`` like any
exported model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

CLASSES = ["square", "circle", "triangle"]


def quadrant_detector(path: Path, imgsz: int = 64) -> Path:
    """Writes the detector to ``path`` (input ``(1, 3, imgsz, imgsz)``, output ``(1, 7, 4)``)."""
    half = imgsz // 2
    # Centre/size boxes in input pixels, one inside each quadrant (row-major: TL, TR, BL, BR).
    boxes = np.array(
        [
            [half * (0.5 + (q % 2)), half * (0.5 + (q // 2)), half * 0.8, half * 0.8]
            for q in range(4)
        ],
        np.float32,
    ).T[None]  # (1, 4, 4)
    inits = [
        helper.make_tensor("boxes", TensorProto.FLOAT, boxes.shape, boxes.ravel().tolist()),
        helper.make_tensor("shape", TensorProto.INT64, (3,), [1, 3, 4]),
        helper.make_tensor("offset", TensorProto.FLOAT, (), [0.45]),
        helper.make_tensor("gain", TensorProto.FLOAT, (), [8.0]),
    ]
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[half, half],
                         strides=[half, half]),
        helper.make_node("Reshape", ["pooled", "shape"], ["means"]),
        helper.make_node("Sub", ["means", "offset"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "quadrants",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, 3, imgsz, imgsz))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, (1, 7, 4))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{c}'" for i, c in enumerate(CLASSES)) + "}"
    model.metadata_props.add(key="names", value=names)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
