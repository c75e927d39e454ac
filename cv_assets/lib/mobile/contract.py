"""The input/output contract a manifest gives the app: what each file takes and returns.

``io_contract`` is the manifest's ``contract``: the ONNX and ``.ort`` files' I/O, the letterbox,
the thresholds and the class names (the facts ``model_card.py`` states in prose). A phone file
whose I/O differs carries an ``io`` object in its manifest entry (``file_io``) that overrides the
contract's ``input``/``output``/``postprocess`` for that file:

- ``tflite``/``tflite_int8``: the same tensors, but boxes normalised to the input size
  (Ultralytics divides them so that int8 keeps the scores' precision): multiply by the input side.
- ``mlpackage``: an image input (a ``CVPixelBuffer``, letterboxed by the app as for the others)
  and Apple's NMS in the model, so Vision's ``VNCoreMLRequest`` returns boxes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# YOLO detect heads predict at strides 8, 16 and 32: one anchor per cell of each grid.
STRIDES = (8, 16, 32)
# Apple's NMS in an ML program needs a class count that is a multiple of 80 (ultralytics #22309):
# the Core ML file's scores are padded with zeros and its extra labels are named "<index>".
COREML_CLASS_PAD = 80


def io_contract(imgsz: int, classes: Sequence[str], conf: float = 0.25, iou: float = 0.7) -> dict:
    """What an app needs to run the file: the facts ``model_card.py`` states in prose.

    Args:
        imgsz: the square input side the file was exported at (static shape, batch 1).
        classes: class names in class-id order.
        conf: the confidence threshold: keep a box whose best class score exceeds it.
        iou: class-wise NMS IoU threshold: suppress a box overlapping a better one by more.
    """
    if imgsz % max(STRIDES):
        raise ValueError(f"imgsz {imgsz} is not a multiple of the largest stride {max(STRIDES)}")
    nc = len(classes)
    anchors = sum((imgsz // s) ** 2 for s in STRIDES)
    return {
        "input": {
            "name": "images",
            "shape": [1, 3, imgsz, imgsz],
            "dtype": "float32",
            "layout": "NCHW",
            "colour": "RGB",
            "scaling": "pixel / 255",
            "letterbox": {
                "keep_aspect": True,
                "scale": f"min({imgsz} / height, {imgsz} / width)",
                "resize": "bilinear",
                "pad": "centred",
                "pad_value": 114,
            },
        },
        "output": {
            "name": "output0",
            "shape": [1, 4 + nc, anchors],
            "dtype": "float32",
            "format": "per anchor: cx, cy, w, h in input pixels, then one sigmoid score per class",
            "nms_in_graph": False,
        },
        "postprocess": {
            "score": "best class per anchor",
            "confidence": conf,
            "nms": {"iou": iou, "class_wise": True},
            "undo_letterbox": "subtract the padding, divide by the scale",
        },
        "classes": list(classes),
    }


def file_io(
    fmt: str, imgsz: int, classes: Sequence[str], conf: float = 0.25, iou: float = 0.7
) -> dict[str, Any]:
    """``{"io": ...}`` for a file whose I/O differs from the contract's, else ``{}``."""
    nc = len(classes)
    anchors = sum((imgsz // s) ** 2 for s in STRIDES)
    if fmt in ("tflite", "tflite_int8"):
        return {"io": {
            "runtime": "LiteRT (ai-edge-litert / TensorFlow Lite interpreter)",
            "input": {"name": "serving_default_args_0", "shape": [1, 3, imgsz, imgsz],
                      "dtype": "float32", "layout": "NCHW"},
            "output": {"shape": [1, 4 + nc, anchors], "dtype": "float32",
                       "format": "per anchor: cx, cy, w, h as fractions of the input side, then "
                                 "one sigmoid score per class",
                       "box_scale": imgsz, "nms_in_graph": False},
        }}  # fmt: skip
    if fmt == "mlpackage":
        padded = -(-nc // COREML_CLASS_PAD) * COREML_CLASS_PAD
        return {"io": {
            "runtime": "Core ML (iOS 16+ / macOS 13+), through Vision's VNCoreMLRequest",
            "package": "a zip holding one model.mlpackage folder: unzip, then compile",
            "input": {"name": "image", "type": "image", "width": imgsz, "height": imgsz,
                      "colour": "RGB", "scaling": "pixel / 255 (in the model)",
                      "optional": {"iouThreshold": iou, "confidenceThreshold": conf}},
            "output": {"confidence": f"(boxes, {padded}): one score per class; the first {nc} "
                                     "are the contract's classes, the rest padding (always 0)",
                       "coordinates": "(boxes, 4): cx, cy, w, h as fractions of the input",
                       "nms_in_graph": True},
        }}  # fmt: skip
    return {}
