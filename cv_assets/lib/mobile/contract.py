"""The input/output contract a manifest gives the app: what each file takes and returns.

``io_contract`` is the manifest's ``contract``: the ONNX and ``.ort`` files' I/O, the letterbox,
the thresholds and the class names (the facts ``model_card.py`` states in prose). A phone file
whose I/O differs carries an ``io`` object in its manifest entry (``file_io``) that overrides the
contract's ``input``/``output``/``postprocess`` for that file:

- ``tflite``/``tflite_int8``: the same tensors, but a one-to-many head's boxes normalised to the
  input size (Ultralytics divides them so that int8 keeps the scores' precision): multiply by the
  input side (``box_scale``).
- ``mlpackage``: an image input (a ``CVPixelBuffer``, letterboxed by the app as for the others)
  and, for a one-to-many head, Apple's NMS in the model, so Vision's ``VNCoreMLRequest`` returns
  boxes directly; for an end-to-end head, one ``detections`` output as the ONNX file's.

Two output layouts, by the model's head (``end2end``):

- one-to-many (YOLO11): ``(1, 4 + nc, anchors)``, centre/size boxes then one score per class;
  the app runs class-wise NMS (``postprocess.nms``).
- end-to-end (YOLO26): ``(1, k, 6)``, the final detections ``x1, y1, x2, y2, score, class``
  best first, k = min(300, anchors); ``output.end_to_end`` is true and ``postprocess.nms`` is
  null: the app keeps the rows above the confidence and runs no NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# YOLO detect heads predict at strides 8, 16 and 32: one anchor per cell of each grid.
STRIDES = (8, 16, 32)
# Apple's NMS in an ML program needs a class count that is a multiple of 80 (ultralytics #22309):
# the Core ML file's scores are padded with zeros and its extra labels are named "<index>".
COREML_CLASS_PAD = 80
# An end-to-end head returns its top MAX_DET detections (fewer when the input has fewer anchors).
MAX_DET = 300
# The end-to-end Core ML file's one output (its traced name, ``var_<n>``, renamed to it).
COREML_END2END_OUTPUT = "detections"
END2END_FORMAT = (
    "per detection, best first: x1, y1, x2, y2 in input pixels, score, class id (a float); "
    "final: no NMS"
)


def anchors(imgsz: int) -> int:
    """Grid cells over the three strides: one prediction each."""
    return sum((imgsz // s) ** 2 for s in STRIDES)


def end2end_rows(imgsz: int) -> int:
    """How many detections an end-to-end head returns at ``imgsz`` (its top-k, k <= anchors)."""
    return min(MAX_DET, anchors(imgsz))


def io_contract(
    imgsz: int,
    classes: Sequence[str],
    conf: float = 0.25,
    iou: float = 0.7,
    end2end: bool = False,
) -> dict:
    """What an app needs to run the file: the facts ``model_card.py`` states in prose.

    Args:
        imgsz: the square input side the file was exported at (static shape, batch 1).
        classes: class names in class-id order.
        conf: the confidence threshold: keep a box whose best class score exceeds it.
        iou: class-wise NMS IoU threshold: suppress a box overlapping a better one by more (a
            one-to-many head only).
        end2end: the head is end-to-end (YOLO26): its output is the final detections.
    """
    if imgsz % max(STRIDES):
        raise ValueError(f"imgsz {imgsz} is not a multiple of the largest stride {max(STRIDES)}")
    nc = len(classes)
    contract = {
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
            "shape": [1, 4 + nc, anchors(imgsz)],
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
    if end2end:
        contract["output"] = {
            "name": "output0",
            "shape": [1, end2end_rows(imgsz), 6],
            "dtype": "float32",
            "format": END2END_FORMAT,
            "end_to_end": True,
            "nms_in_graph": False,
        }
        contract["postprocess"] = {
            "score": "column 4 of each row",
            "confidence": conf,
            "nms": None,
            "undo_letterbox": "subtract the padding, divide by the scale",
        }
    return contract


def file_io(
    fmt: str,
    imgsz: int,
    classes: Sequence[str],
    conf: float = 0.25,
    iou: float = 0.7,
    end2end: bool = False,
) -> dict[str, Any]:
    """``{"io": ...}`` for a file whose I/O differs from the contract's, else ``{}``."""
    nc = len(classes)
    if end2end:
        return _end2end_file_io(fmt, imgsz)
    if fmt in ("tflite", "tflite_int8"):
        return {"io": {
            "runtime": "LiteRT (ai-edge-litert / TensorFlow Lite interpreter)",
            "input": {"name": "serving_default_args_0", "shape": [1, 3, imgsz, imgsz],
                      "dtype": "float32", "layout": "NCHW"},
            "output": {"shape": [1, 4 + nc, anchors(imgsz)], "dtype": "float32",
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


def _end2end_file_io(fmt: str, imgsz: int) -> dict[str, Any]:
    """An end-to-end head's phone files: the contract's detections, in input pixels (the LiteRT
    file too: only a one-to-many head's boxes are normalised), no NMS anywhere."""
    rows = end2end_rows(imgsz)
    if fmt in ("tflite", "tflite_int8"):
        return {"io": {
            "runtime": "LiteRT (ai-edge-litert / TensorFlow Lite interpreter)",
            "input": {"name": "serving_default_args_0", "shape": [1, 3, imgsz, imgsz],
                      "dtype": "float32", "layout": "NCHW"},
            "output": {"shape": [1, rows, 6], "dtype": "float32", "format": END2END_FORMAT,
                       "box_scale": 1, "end_to_end": True, "nms_in_graph": False},
        }}  # fmt: skip
    if fmt == "mlpackage":
        return {"io": {
            "runtime": "Core ML (iOS 16+ / macOS 13+), an ML program (VNCoreMLRequest returns a "
                       "VNCoreMLFeatureValueObservation)",
            "package": "a zip holding one model.mlpackage folder: unzip, then compile",
            "input": {"name": "image", "type": "image", "width": imgsz, "height": imgsz,
                      "colour": "RGB", "scaling": "pixel / 255 (in the model)"},
            "output": {"name": COREML_END2END_OUTPUT, "shape": [1, rows, 6], "dtype": "float32",
                       "format": END2END_FORMAT, "end_to_end": True, "nms_in_graph": False},
        }}  # fmt: skip
    return {}
