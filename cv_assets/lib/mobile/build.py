"""Building a mobile release: export, quantise and convert the champion's weights, then prove each
file on the frozen test split and write the model card.

The release's shape (its files, budgets and verdicts) lives in ``release.py``; the card in
``model_card.py`` reads that shape, so the two no longer import each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.metrics import evaluate_detections, read_yolo_truth
from cv_assets.lib.core.onnx_detect import OnnxDetector, predict_files
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.lib.dataset.snapshot import test_split
from cv_assets.lib.mobile.export import (
    ExportFailed,
    QuantScheme,
    convert_to_ort,
    export_onnx,
    latency_ms,
    quantize_int8,
    stamp_metadata,
)
from cv_assets.lib.mobile.model_card import model_card
from cv_assets.lib.mobile.platforms import platform_files
from cv_assets.lib.mobile.records import MobileModel
from cv_assets.lib.mobile.release import (
    FILE_NAMES,
    Budgets,
    FileResult,
    Release,
    parity_metrics,
    release_key,
)
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.training.records import ModelEvaluation, YoloModel
from cv_assets.lib.training.yolo import verified_weights


def _judge(
    fmt: str,
    path: Path,
    images: list[str],
    truths: list[Any],
    n_classes: int,
    reference: dict[str, float],
    tolerance: float,
    budgets: Budgets,
) -> FileResult:
    m = evaluate_detections(predict_files(path, images), truths, n_classes)
    size = os.path.getsize(path)
    lat = latency_ms(path)
    delta = m.map50_95 - reference["map50_95"]
    r = FileResult(fmt, path, size, m.map50, m.map50_95, delta, lat, tolerance, True)
    ref = reference["map50_95"]
    checks = [
        (delta >= -tolerance, f"mAP50-95 {m.map50_95:.4f} vs PyTorch {ref:.4f}",
         f"(delta {delta:+.4f}, tolerance {tolerance})"),
        (lat <= budgets.max_latency_ms, f"latency {lat:.1f} ms",
         f"(budget {budgets.max_latency_ms} ms)"),
        (size <= budgets.max_file_mb * 2**20, f"size {size / 2**20:.2f} MiB",
         f"(budget {budgets.max_file_mb} MiB)"),
    ]  # fmt: skip
    for ok, what, rule in checks:
        r.reasons.append(f"{what} {'within' if ok else 'OUTSIDE'} {rule}")
        r.passed &= ok
    return r


def build_release(
    weights: Path,
    imgsz: int,
    out_dir: Path,
    *,
    test_images: list[str],
    test_labels: list[str],
    calibration: list[str],
    n_classes: int,
    reference: dict[str, float],
    scheme: QuantScheme,
    budgets: Budgets,
    opset: int | None = None,
    meta: dict[str, Any] | None = None,
    export_python: Path | None = None,
    platforms: bool = True,
) -> Release:
    """Export, quantize and convert ``weights``; judge every file against ``reference``.

    Raises ``ExportFailed`` when the fp32 export or the ``.ort`` conversion fails; a failed int8
    quantization only makes fp32 the app's file. The LiteRT and Core ML files (``platforms``)
    are made in the export environment ``export_python``; each that fails is recorded and left
    out, and never fails the release. An end-to-end head (YOLO26) gives files whose output is
    the final detections; ``meta["end2end"]`` and ``Release.end2end`` say so.
    """
    truths = [read_yolo_truth(Path(p).read_text()) for p in test_labels]
    meta = dict(meta or {})

    def judge(fmt: str, path: Path, tol: float) -> FileResult:
        return _judge(fmt, path, test_images, truths, n_classes, reference, tol, budgets)

    fp32 = export_onnx(weights, imgsz, out_dir / "export", opset)
    # The head decides the output (final detections, or anchors for NMS): every file says which,
    # and the phone converters export the same head.
    meta["end2end"] = OnnxDetector(fp32).end2end
    used_opset = stamp_metadata(fp32, meta | {"format": "onnx_fp32"})
    files = {"onnx_fp32": judge("onnx_fp32", fp32, budgets.fp32_tolerance)}
    try:
        int8 = quantize_int8(fp32, out_dir / FILE_NAMES["onnx_int8"], calibration, scheme)
        stamp_metadata(int8, meta | {"format": "onnx_int8", "quantization": scheme.as_dict()})
        files["onnx_int8"] = judge("onnx_int8", int8, budgets.int8_tolerance)
        ratio = files["onnx_int8"].bytes / files["onnx_fp32"].bytes
        ok = ratio <= budgets.int8_max_size_ratio
        files["onnx_int8"].reasons.append(
            f"size {ratio:.3f}x fp32 {'within' if ok else 'OUTSIDE'} "
            f"(budget {budgets.int8_max_size_ratio}x)"
        )
        files["onnx_int8"].passed &= ok
    except ExportFailed as e:
        files["onnx_int8"] = FileResult("onnx_int8", None, reasons=[str(e)])
    int8_ok = files["onnx_int8"].passed
    app_format = "onnx_int8" if int8_ok else "onnx_fp32"
    if int8_ok:
        why = "int8 keeps its accuracy and size budgets"
    else:
        failed = [r for r in files["onnx_int8"].reasons if "OUTSIDE" in r or "failed" in r]
        why = "int8 failed its parity check, so fp32 ships: " + "; ".join(failed)
    src = files[app_format].path
    assert src is not None
    ort_path, report = convert_to_ort(src, out_dir / "ort")
    tol = budgets.int8_tolerance if int8_ok else budgets.fp32_tolerance
    files["ort"] = judge("ort", ort_path, tol)
    if platforms:
        files |= platform_files(
            export_python, weights, imgsz, out_dir / "platforms", calibration=calibration,
            meta=meta, judge=judge, budgets=budgets,
        )  # fmt: skip
    return Release(
        files, app_format, why, app_format, used_opset, report, reference, budgets, scheme,
        end2end=bool(meta["end2end"]),
    )  # fmt: skip


def calibration_images(store: Any, dataset: TrainingDataset, cache: Path, n: int) -> list[str]:
    """``n`` training images in content-hash order: a fixed sample, never from the test split."""

    images, _ = test_split(store, dataset, cache, split="train")
    return images[:n]


def build_mobile_release(
    store: Any,
    challenger: YoloModel,
    evaluation: ModelEvaluation,
    dataset: TrainingDataset,
    scheme: QuantScheme,
    budgets: Budgets,
    *,
    opset: int | None = None,
    force: bool = False,
    mlflow_client: Any = None,
    export_python: Path | None = None,
    platforms: bool = True,
) -> MobileModel:
    """Convert the challenger's weights, prove each file, publish them; reuse a finished release.

    Files go to ``mobile/<key>/``; ``release.json`` is written last, so a conversion that dies
    half-way leaves nothing that looks finished, and earlier releases are never touched.
    """

    w, imgsz = challenger["weights"], int(challenger["params"]["imgsz"])
    key = release_key(w["sha256"], imgsz, scheme, opset, platforms)
    record_key = layout.mobile_release(key)
    if store.exists(record_key) and not force:
        return json.loads(store.get_bytes(record_key)) | {"reused": True}
    reference = {k: float(evaluation["challenger"][k]) for k in ("map50", "map50_95")}
    meta = {
        "dataset_version": dataset["version"],
        "weights_sha256": w["sha256"],
        "mlflow_run_id": challenger["mlflow_run_id"],
        "classes": dataset["classes"],
        "imgsz": imgsz,
    }
    with scratch_dir("mobile") as tmp:
        cache = Path(tmp) / "cache"
        weights = verified_weights(local_file(store, w["uri"], cache), w["sha256"])
        images, labels = test_split(store, dataset, cache)
        release = build_release(
            weights,
            imgsz,
            Path(tmp) / "out",
            test_images=images,
            test_labels=labels,
            calibration=calibration_images(store, dataset, cache, scheme.calibration_images),
            n_classes=len(dataset["classes"]),
            reference=reference,
            scheme=scheme,
            budgets=budgets,
            opset=opset,
            meta=meta,
            export_python=export_python,
            platforms=platforms,
        )
        refs = {
            fmt: store.put_file(layout.mobile_file(key, FILE_NAMES[fmt]), f.path)
            for fmt, f in release.files.items()
            if f.path is not None
        }
        card = model_card(
            release,
            title=f"weights {w['sha256'][:12]}",
            classes=dataset["classes"],
            imgsz=imgsz,
            dataset_version=dataset["version"],
            weights_sha256=w["sha256"],
            hashes={fmt: r.sha256 for fmt, r in refs.items()},
        )
        card_ref = store.put_bytes(f"mobile/{key}/MODEL_CARD.md", card.encode())
        report_ref = store.put_bytes(
            f"mobile/{key}/usability_report.txt", release.usability_report.encode()
        )
        if mlflow_client is not None:
            run_id = challenger["mlflow_run_id"]
            for fmt in ("onnx_fp32", "onnx_int8"):
                if (path := release.files[fmt].path) is not None:
                    tracking.log_onnx_model(mlflow_client, run_id, str(path), f"mobile/{fmt}")
            for fmt in ("ort", "tflite", "tflite_int8", "mlpackage"):
                if path := release.files[fmt].path if fmt in release.files else None:
                    mlflow_client.log_artifact(run_id, str(path), "mobile")
            mlflow_client.log_text(run_id, card, "mobile/MODEL_CARD.md")
            mlflow_client.log_text(run_id, release.usability_report, "mobile/usability_report.txt")
            tracking.log_metrics(mlflow_client, run_id, parity_metrics(release))
    record: MobileModel = {
        "key": key,
        "weights_sha256": w["sha256"],
        "dataset_version": dataset["version"],
        "mlflow_run_id": challenger["mlflow_run_id"],
        "imgsz": imgsz,
        "classes": dataset["classes"],
        "files": {fmt: r.as_dict() for fmt, r in refs.items()},
        "model_card": card_ref.as_dict(),
        "usability_report": report_ref.as_dict(),
        "summary": release.summary(),
        "reused": False,
    }
    # The stored release never says "reused": that is a fact about this run, not the files.
    stored = {k: v for k, v in record.items() if k != "reused"}
    store.put_bytes(record_key, json.dumps(stored, indent=1).encode())
    return record
