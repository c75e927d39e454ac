"""The reference decoding of a released model's output, read from the manifest's contract.

What an app does with the tensor its runtime returns for one letterboxed frame: the manifest's
``contract`` (with a phone file's ``io`` over its ``output``) says which of two layouts the file
has, and this module follows it, nothing else:

- ``output.end_to_end`` true (YOLO26): ``(1, k, 6)`` final detections ``x1, y1, x2, y2, score,
  class``, best first; keep the rows above ``postprocess.confidence``; no NMS.
- otherwise (YOLO11): ``(1, 4 + classes, anchors)``, centre/size boxes then one score per class;
  best class per anchor, the confidence, then class-wise NMS at ``postprocess.nms.iou``.

Either way boxes are multiplied by the file's ``box_scale`` (LiteRT's one-to-many file gives
fractions of the input side) and the letterbox is undone. The arithmetic is the platform's
reference post-processing (``cv_assets.lib.core.onnx_detect``), imported rather than copied, as
``release_client`` imports the channel's rules: the app and the parity checks share one tested
implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cv_assets.lib.core.onnx_detect import Letterbox, postprocess, postprocess_end2end


class OutputMismatch(ValueError):
    """The runtime's output is not the shape the contract promises: the wrong file or contract."""


def output_spec(contract: Mapping[str, Any], file: Mapping[str, Any] | None = None) -> dict:
    """The file's output: the contract's, or the manifest file entry's ``io.output`` over it."""
    io = (file or {}).get("io") or {}
    return dict(io.get("output") or contract["output"])


def decode_output(
    output: np.ndarray,
    contract: Mapping[str, Any],
    lb: Letterbox,
    file: Mapping[str, Any] | None = None,
    conf: float | None = None,
) -> np.ndarray:
    """``(M, 6)`` ``[x1, y1, x2, y2, score, class]`` normalised to the original image.

    Args:
        output: the runtime's first output for one frame, batch axis included.
        contract: the manifest's ``contract``.
        lb: how the frame was letterboxed (``onnx_detect.letterbox``).
        file: the manifest's entry of the file that ran, for its ``io`` (phone files).
        conf: the app's confidence threshold; the contract's when None.
    """
    spec, post = output_spec(contract, file), contract["postprocess"]
    raw = np.array(output, dtype=np.float32)
    if list(raw.shape) != list(spec["shape"]):
        raise OutputMismatch(f"the model's output has shape {list(raw.shape)}, the contract says "
                             f"{spec['shape']} ({spec['format']})")  # fmt: skip
    raw, scale = raw[0], float(spec.get("box_scale", 1))
    threshold = post["confidence"] if conf is None else conf
    if spec.get("end_to_end"):
        raw[:, :4] *= scale
        return postprocess_end2end(raw, lb, threshold)
    raw[:4] *= scale
    return postprocess(raw, lb, threshold, post["nms"]["iou"])
