"""The phones' files: converted in the export environment, judged here; each fails alone."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cv_assets.lib.core.onnx_detect import OnnxDetector, letterbox, open_detector
from cv_assets.lib.mobile import platforms
from cv_assets.lib.mobile.contract import file_io
from cv_assets.lib.mobile.export import ExportFailed, export_onnx
from cv_assets.lib.mobile.release import Budgets, FileResult, failure_reason

CLASSES = ["square", "circle", "triangle"]
META = {"weights_sha256": "ab" * 32, "dataset_version": "d1", "mlflow_run_id": "r1",
        "classes": CLASSES}  # fmt: skip


def _never_judged(fmt: str, path: Path, tol: float) -> FileResult:
    raise AssertionError(f"{fmt} has no file to judge")


@pytest.mark.unit
def test_without_the_export_environment_each_phone_file_is_withheld_with_how_to_fix(tmp_path):
    got = platforms.platform_files(
        None, tmp_path / "w.pt", 64, tmp_path / "out", calibration=[], meta=META,
        judge=_never_judged, budgets=Budgets(),
    )  # fmt: skip
    assert set(got) == {"tflite", "tflite_int8", "mlpackage"}
    for fmt, r in got.items():
        assert r.path is None and not r.passed and r.check == "conversion"
        assert "make export-install" in failure_reason(r.as_dict()) or fmt == "tflite_int8"
    assert "made from the fp32 .tflite, which failed" in got["tflite_int8"].reasons[0]


@pytest.mark.unit
def test_a_converter_that_fails_reports_its_own_reason(tmp_path):
    # The real worker in a real process: the weights are missing, so the converter fails first.
    out = str(tmp_path / "model.mlpackage.zip")
    req = {"format": "mlpackage", "weights": str(tmp_path / "missing.pt"), "imgsz": 64,
           "out": out, "meta": META, "calibration": []}  # fmt: skip
    with pytest.raises(ExportFailed, match=r"mlpackage conversion failed: FileNotFoundError"):
        platforms.convert(Path(sys.executable), req, timeout_s=120)
    assert not (tmp_path / "model.mlpackage.zip").exists()


@pytest.mark.unit
def test_a_converter_killed_or_hung_is_that_files_failure(tmp_path):
    killed = tmp_path / "python"
    # It talks first, as a converter does, then dies: the reason must be the signal, not its talk.
    killed.write_text("#!/bin/sh\necho 'Converting PyTorch Frontend ==> MIL Ops' >&2\nkill -9 $$\n")
    killed.chmod(0o755)
    req = {"format": "tflite", "out": str(tmp_path / "model.tflite")}
    with pytest.raises(
        ExportFailed, match=r"tflite conversion failed: exit status -9 \(killed by signal 9"
    ):
        platforms.convert(killed, req)
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nsleep 30\n")
    hung.chmod(0o755)
    with pytest.raises(ExportFailed, match=r"tflite conversion took longer than 1 s"):
        platforms.convert(hung, req, timeout_s=1)


@pytest.mark.unit
def test_an_archive_that_is_not_one_safe_mlpackage_fails_the_structural_check(tmp_path):
    for name, entries in {
        "escape": {"../evil/Manifest.json": b"{}"},
        "two": {"a.mlpackage/Manifest.json": b"{}", "b/x": b"1"},
        "garbage": {"model.mlpackage/Manifest.json": b"not a manifest"},
    }.items():
        z = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for n, data in entries.items():
                zf.writestr(n, data)
        (ok, why), *rest = platforms.coreml_checks(z, 64, CLASSES, META, 0.25, 0.7)
        assert not ok and not rest and why.startswith("does not load as a Core ML package")
    assert not (tmp_path / "evil").exists()


@pytest.mark.unit
def test_phone_files_carry_their_own_io_in_the_manifest():
    assert file_io("onnx_int8", 320, CLASSES) == {}
    lite = file_io("tflite_int8", 320, CLASSES)["io"]
    assert lite["output"]["box_scale"] == 320 and lite["output"]["shape"] == [1, 7, 2100]
    ios = file_io("mlpackage", 320, CLASSES, conf=0.3, iou=0.6)["io"]
    assert ios["input"]["optional"] == {"iouThreshold": 0.6, "confidenceThreshold": 0.3}
    assert "(boxes, 80)" in ios["output"]["confidence"] and ios["output"]["nms_in_graph"]


@pytest.mark.unit
def test_an_end_to_end_heads_phone_files_give_final_detections_in_pixels():
    lite = file_io("tflite_int8", 320, CLASSES, end2end=True)["io"]["output"]
    assert lite["shape"] == [1, 300, 6] and lite["box_scale"] == 1 and lite["end_to_end"]
    ios = file_io("mlpackage", 64, CLASSES, end2end=True)["io"]
    assert ios["output"]["name"] == "detections" and ios["output"]["shape"] == [1, 84, 6]
    assert not ios["output"]["nms_in_graph"] and "optional" not in ios["input"]
    assert file_io("ort", 64, CLASSES, end2end=True) == {}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """A real YOLO11n checkpoint of three classes, untrained: conversion needs no training."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("weights") / "random.pt"
    y = YOLO("yolo11n.yaml")
    y.model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    y.model.names = dict(enumerate(CLASSES))
    y.save(str(path))
    return path


def _export_python() -> Path:
    python = platforms.export_python()
    assert python is not None, "the export environment is missing: run `make export-install`"
    return python


@pytest.mark.slow
def test_the_tflite_file_computes_what_the_onnx_file_does(random_weights, tmp_path):
    path, tool = platforms.convert(
        _export_python(),
        {"format": "tflite", "weights": str(random_weights), "imgsz": 64, "meta": META,
         "calibration": [], "out": str(tmp_path / "model.tflite")},
    )  # fmt: skip
    assert tool.startswith("litert-torch ")
    lite, onnx = open_detector(path), OnnxDetector(export_onnx(random_weights, 64, tmp_path / "x"))
    assert lite.imgsz == 64 and lite.class_names == CLASSES
    assert lite.metadata["weights_sha256"] == META["weights_sha256"]
    rng = np.random.default_rng(0)
    img = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    blob = letterbox(img, 64)[0]
    a, b = onnx.raw(blob), lite.raw(blob)
    assert a.shape == b.shape == (7, 84)
    # The .tflite's boxes are fractions of the input; raw() puts them back in pixels.
    assert np.allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(a).max())))


@pytest.mark.slow
def test_the_mlpackage_passes_its_structural_check_and_each_fact_can_fail(random_weights, tmp_path):
    path, tool = platforms.convert(
        _export_python(),
        {"format": "mlpackage", "weights": str(random_weights), "imgsz": 64, "meta": META,
         "calibration": [], "conf": 0.25, "iou": 0.7, "out": str(tmp_path / "m.mlpackage.zip")},
    )  # fmt: skip
    assert tool == "coremltools 9.0"
    checks = platforms.coreml_checks(path, 64, CLASSES, META, 0.25, 0.7)
    assert len(checks) == 6 and all(ok for ok, _ in checks), checks
    failed = {  # what each wrong expectation breaks
        "input": platforms.coreml_checks(path, 96, CLASSES, META, 0.25, 0.7),
        "labels": platforms.coreml_checks(path, 64, ["a", "b", "c"], META, 0.25, 0.7),
        "NMS": platforms.coreml_checks(path, 64, CLASSES, META, 0.5, 0.7),
        "metadata": platforms.coreml_checks(
            path, 64, CLASSES, META | {"mlflow_run_id": "x"}, 0.25, 0.7
        ),
    }
    for what, got in failed.items():
        bad = [why for ok, why in got if not ok]
        assert len(bad) == 1, (what, bad)
    assert "found 64x64" in next(w for ok, w in failed["input"] if not ok)
    # Judged as an end-to-end head's package, the NMS pipeline is not the ML program alone.
    as_e2e = platforms.coreml_checks(path, 64, CLASSES, META | {"end2end": True}, 0.25, 0.7)
    bad = [why for ok, why in as_e2e if not ok]
    assert any(
        w.startswith("an ML program without Apple's NMS") and "(found pipeline)" in w for w in bad
    )
    assert any(w.startswith("one output 'detections' of shape (1, 84, 6)") for w in bad)
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("model.mlpackage/Manifest.json"))["rootModelIdentifier"]
