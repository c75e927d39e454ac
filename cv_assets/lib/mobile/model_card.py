"""The markdown model card that goes with every mobile release."""

from __future__ import annotations

from cv_assets.lib.core.report import md_table
from cv_assets.lib.mobile.contract import end2end_rows
from cv_assets.lib.mobile.release import FORMATS, Release, failure_reason


def model_card(
    release: Release,
    *,
    title: str,
    classes: list[str],
    imgsz: int,
    dataset_version: str,
    weights_sha256: str,
    hashes: dict[str, str],
) -> str:
    """The markdown page that goes with a mobile release."""
    rows = []
    for fmt in FORMATS:
        if (f := release.files.get(fmt)) is None:
            continue
        measured = f.check == "parity" and f.path is not None
        rows.append((
            fmt
            + (" (app)" if fmt == release.app_format else "")
            + (f" (ORT Mobile, from {release.ort_source})" if fmt == "ort" else ""),
            f.check,
            f"{f.map50:.4f}" if measured else "—",
            f"{f.map50_95:.4f}" if measured else "—",
            f"{f.delta_map50_95:+.4f}" if measured else "—",
            f"{f.latency_ms:.1f}" if measured else "—",
            f"{f.bytes / 2**20:.2f}" if f.bytes else "—",
            "pass" if f.passed else "FAIL: " + failure_reason(f.as_dict()),
            hashes.get(fmt, "-")[:12],
        ))  # fmt: skip
    table = md_table(
        rows, ["file", "check", "mAP50", "mAP50-95", "vs PyTorch", "ms (batch 1, 2 threads)",
               "MiB", "verdict", "sha256"],
    )  # fmt: skip
    ref = release.reference
    return f"""# cv_assets detector, {title}

- **Classes** ({len(classes)}): {", ".join(f"{i}: {c}" for i, c in enumerate(classes))}
- **Dataset version:** `{dataset_version}`; weights sha256 `{weights_sha256[:16]}`
- **PyTorch on the test split:** mAP50 {ref["map50"]:.4f}, mAP50-95 {ref["map50_95"]:.4f}

## Input and preprocessing
- One RGB image, tensor `images` of shape `(1, 3, {imgsz}, {imgsz})`, float32 in [0, 1].
- Letterbox: scale by `min({imgsz}/h, {imgsz}/w)` with bilinear resizing, keep the aspect ratio,
  pad to the centre with grey 114; channels RGB; NCHW.

## Output and post-processing
{_output(release, imgsz, len(classes))}

## Files
{table}

- The app's file is **{release.app_format}** ({release.app_reason}); `model.ort` is made from it
  for ONNX Runtime Mobile.
- ONNX opset {release.opset}; static batch 1; int8 is static QDQ, per-channel weights,
  calibrated ({release.scheme.method}, {release.scheme.calibration_images} training images),
  with the head's box and score decoding{" and top-k selection" if release.end2end else ""} in
  float.
{_phone_files(release, imgsz)}
"""


def _output(release: Release, imgsz: int, nc: int) -> str:
    """The output tensor and what the app does with it, by the model's head."""
    if release.end2end:
        return f"""- The head is **end-to-end** (YOLO26's one-to-one head): tensor
  `(1, {end2end_rows(imgsz)}, 6)`, the final detections, best first: x1, y1, x2, y2 in input
  pixels, score, class id.
- **No NMS in the app**: keep the rows whose score is above your threshold, undo the letterbox
  (subtract the padding, divide by the scale). `cv_assets/lib/core/onnx_detect.py`
  (`postprocess_end2end`) is the reference implementation."""
    return f"""- Tensor `(1, {4 + nc}, anchors)`: box centre x, y, width, height in input pixels,
  then one sigmoid score per class.
- NMS is not in the graph: take the best class per anchor, drop scores below your threshold,
  suppress boxes of the same class with IoU > 0.7, undo the letterbox (subtract the padding,
  divide by the scale). `cv_assets/lib/core/onnx_detect.py` is the reference implementation."""


def _phone_files(release: Release, imgsz: int) -> str:
    if release.end2end:
        return f"""- Android: `model.tflite` (fp32) and `model_int8.tflite` (static int8, fp32 input
  and output, float head) run in LiteRT on the test split like the ONNX files. Their output is
  the same final detections, boxes in input pixels.
- iOS: `model.mlpackage.zip` holds a Core ML ML program alone (input `image`, output
  `detections` `(1, {end2end_rows(imgsz)}, 6)` as above; no NMS, Apple's or the app's). Core ML
  does not run on Linux, so its check is structural (input, output, class names, metadata), not
  a measured mAP."""
    return f"""- Android: `model.tflite` (fp32) and `model_int8.tflite` (static int8, fp32 input and
  output, float head) run in LiteRT on the test split like the ONNX files. Their boxes come
  out as fractions of the input side: multiply by {imgsz}.
- iOS: `model.mlpackage.zip` holds a Core ML ML program with Apple's NMS in a pipeline (input
  `image`, outputs `confidence` and `coordinates`, for Vision's `VNCoreMLRequest`). Core ML
  does not run on Linux, so its check is structural (input, outputs, labels, thresholds,
  metadata), not a measured mAP."""
