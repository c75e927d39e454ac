"""Detection through onnxruntime alone: the app's pre- and post-processing, in numpy.

This module must not import torch or Ultralytics: ``cv-assets predict`` starts from it, and an app
developer reads it as the reference for what to do on the phone. Preprocessing is exactly
Ultralytics' square letterbox (as in training and validation): keep the aspect ratio, resize with
bilinear interpolation, pad with grey 114 to the centre, BGR to RGB, scale to [0, 1], NCHW.

Post-processing depends on the head's output (``end2end``, from the file's metadata or shape):

- one-to-many heads (YOLO11): ``(1, 4 + nc, anchors)``, centre/size boxes then class scores;
  Ultralytics' NMS for one image: best class per anchor, confidence filter, class-aware IoU
  suppression, at most ``max_det`` boxes (``postprocess``);
- end-to-end heads (YOLO26's one-to-one head): ``(1, k, 6)``, final detections ``x1, y1, x2, y2,
  score, class`` best first, k = min(300, anchors); a confidence filter and nothing else, no NMS
  (``postprocess_end2end``).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAD_VALUE = 114
MAX_WH = 7680  # class offset for class-aware NMS in one pass, as Ultralytics does
MAX_NMS = 30000


class ImageUnreadable(ValueError):
    """A file that cannot be decoded as an image; the message names the file."""


def read_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode ``path`` (or its bytes) to an HxWx3 BGR uint8 array, as Ultralytics' loader does."""
    import cv2

    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ImageUnreadable(f"{path}: cannot read the file ({e.strerror})") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise ImageUnreadable(
            f"{path}: not a decodable image ({len(data)} bytes; expected JPEG or PNG)"
        )
    return img


@dataclass(frozen=True)
class Letterbox:
    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    shape: tuple[int, int]  # original (h, w)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """``(1, 3, size, size)`` float32 RGB input in [0, 1], and how to map boxes back."""
    import cv2

    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(
        img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    blob = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32)
    blob /= 255.0
    return blob, Letterbox(new_w / w, new_h / h, left, top, (h, w))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Indices kept by greedy IoU suppression, in descending score order."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter + 1e-7)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    raw: np.ndarray,
    lb: Letterbox,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
) -> np.ndarray:
    """``(4 + nc, N)`` head output to ``(M, 6)`` ``[x1, y1, x2, y2, conf, cls]``, normalised."""
    pred = raw.T
    scores_all = pred[:, 4:]
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(pred)), cls]
    keep = scores > conf
    if not keep.any():
        return np.zeros((0, 6), dtype=np.float32)
    xywh, scores, cls = pred[keep, :4], scores[keep], cls[keep]
    if len(scores) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        xywh, scores, cls = xywh[top], scores[top], cls[top]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    kept = nms(xyxy + (cls * MAX_WH)[:, None], scores, iou)[:max_det]
    xyxy, scores, cls = xyxy[kept], scores[kept], cls[kept]
    h, w = lb.shape
    xyxy = (xyxy - [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]) / [
        lb.gain_x,
        lb.gain_y,
        lb.gain_x,
        lb.gain_y,
    ]
    xyxy = xyxy.clip(0, [w, h, w, h]) / [w, h, w, h]
    return np.concatenate([xyxy, scores[:, None], cls[:, None]], 1).astype(np.float32)


def postprocess_end2end(
    raw: np.ndarray, lb: Letterbox, conf: float = 0.25, max_det: int = 300
) -> np.ndarray:
    """``(k, 6)`` end-to-end output to ``(M, 6)`` ``[x1, y1, x2, y2, conf, cls]``, normalised.

    The rows are already the model's final detections, best first (its one-to-one head assigns
    one prediction per object, so there is nothing to suppress): keep those above ``conf``.
    """
    pred = np.asarray(raw, dtype=np.float32).reshape(-1, 6)
    pred = pred[pred[:, 4] > conf][:max_det]
    h, w = lb.shape
    pad = np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
    gain = np.array([lb.gain_x, lb.gain_y, lb.gain_x, lb.gain_y], np.float32)
    xyxy = ((pred[:, :4] - pad) / gain).clip(0, [w, h, w, h]) / [w, h, w, h]
    return np.concatenate([xyxy, pred[:, 4:6]], 1).astype(np.float32)


def is_end2end_output(shape: Sequence[int]) -> bool:
    """Whether a batch-1 head output of ``shape`` is end-to-end ``(1, k, 6)`` rather than
    ``(1, 4 + nc, anchors)``: a head has at least 21 anchors (imgsz 32), and k is as many up to
    300, so the last axis tells them apart."""
    return len(shape) == 3 and shape[-1] == 6


def decode(
    raw: np.ndarray,
    lb: Letterbox,
    end2end: bool,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
) -> np.ndarray:
    """The head's batch-1 output (without the batch axis, boxes in input pixels) to ``(M, 6)``
    normalised detections: ``postprocess_end2end`` or NMS by ``postprocess``."""
    if end2end:
        return postprocess_end2end(raw, lb, conf, max_det)
    return postprocess(raw, lb, conf, iou, max_det)


class OnnxDetector:
    """One ONNX or ``.ort`` detector file in an onnxruntime CPU session."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.imgsz = int(inp.shape[-1])
        self.metadata = model_metadata(self.session.get_modelmeta().custom_metadata_map)
        shape = self.session.get_outputs()[0].shape
        self.end2end = bool(self.metadata.get("end2end", is_end2end_output(shape)))

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("names", []))

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """The head's output without the batch axis: ``(4 + nc, anchors)``, or ``(k, 6)`` for an
        end-to-end head; boxes in input pixels."""
        return np.asarray(self.session.run(None, {self.input_name: blob})[0])[0]

    def detect(
        self, img: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300
    ) -> np.ndarray:
        blob, lb = letterbox(img, self.imgsz)
        return decode(self.raw(blob), lb, self.end2end, conf, iou, max_det)


def model_metadata(props: dict[str, str]) -> dict[str, Any]:
    """The ONNX metadata Ultralytics writes (names as a Python dict literal, ``end2end`` as
    ``True``/``False``) plus the platform's."""
    out: dict[str, Any] = {}
    if "names" in props:
        names = ast.literal_eval(props["names"])
        out["names"] = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
    if props.get("end2end") in ("True", "False"):
        out["end2end"] = props["end2end"] == "True"
    if "cv_assets" in props:
        out |= json.loads(props["cv_assets"])
    for k in ("imgsz", "stride"):
        if k in props:
            out[k] = ast.literal_eval(props[k])
    return out


def open_detector(path: str | Path, threads: int = 2) -> Any:
    """An ``OnnxDetector`` for ``.onnx``/``.ort``, a LiteRT ``TfliteDetector`` for ``.tflite``:
    the same ``imgsz``, ``class_names``, ``end2end``, ``raw`` and ``detect``."""
    if Path(path).suffix == ".tflite":
        from cv_assets.lib.core.litert_detect import TfliteDetector

        return TfliteDetector(path, threads=threads)
    return OnnxDetector(path, threads=threads)


def predict_files(
    path: Path, images: Sequence[str], conf: float = 0.001, iou: float = 0.7, threads: int = 2
) -> list[np.ndarray]:
    """Per image ``(M, 6)`` normalised detections, with the same thresholds as evaluation."""
    det = open_detector(path, threads=threads)
    return [det.detect(read_image(p), conf=conf, iou=iou) for p in images]
