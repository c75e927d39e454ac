"""mobile_model on real tiny trainings: every app file re-evaluated or checked, parity-gated,
published; a converter that fails costs only its own file."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow.onnx
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from cv_assets.cli.predict import predict
from cv_assets.cli.status import collect_status, render_status
from cv_assets.lib.core.onnx_detect import OnnxDetector, open_detector
from cv_assets.lib.core.store import sha256_file
from cv_assets.lib.mobile.export import head_float_nodes
from cv_assets.lib.mobile.platforms import export_python
from cv_assets.lib.tracking import runs as tracking
from cv_assets.read_side import registry_for
from cv_assets.resources.io_manager import record_key
from cv_assets_tests.support.jobs import check_named, materialized, train
from cv_assets_tests.support.models import as_printed

pytestmark = pytest.mark.slow


def killing_core_ml(tmp_path: Path) -> str:
    """The export environment's python, except that the Core ML converter is killed (SIGKILL, as
    the kernel's OOM killer does) the moment it starts."""
    python = export_python()
    assert python is not None, "the export environment is missing: run `make export-install`"
    wrapper = tmp_path / "export-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a; do request="$a"; done\n'  # the worker's last argument: its request
        'if grep -q \'"format": "mlpackage"\' "$request"; then kill -9 $$; fi\n'
        f'exec "{python}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def test_champion_gets_proven_mobile_files_that_predict_uses_and_a_killed_converter_costs_one(
    small_home, instance, monkeypatch, tmp_path
):
    cfg = dataclasses.replace(small_home, export_python=killing_core_ml(tmp_path), phone_files=True)
    result = train(cfg, instance)
    assert result.success
    mob = materialized(result, "mobile_model")
    assert mob is not None and mob["reused_existing_files"] is False
    # The record reached the IO manager, and the data version names the files it stands for.
    rec = json.loads((Path(cfg.artifacts_root) / record_key("mobile_model", None)).read_text())
    latest = instance.get_latest_materialization_event(dg.AssetKey("mobile_model"))
    mat = latest.asset_materialization if latest else None
    assert mat is not None and mat.tags["dagster/data_version"] == rec["key"]
    assert check_named(result, "onnx_parity_ok").passed
    # status --json (through the registry's champion alias) leads to the three files.
    champ = collect_status(cfg)["champion"]
    paths = {k: Path(champ[k]) for k in ("onnx_uri", "onnx_int8_uri", "ort_uri")}
    assert all(p.is_file() for p in paths.values())
    assert {p.name for p in paths.values()} == {"model.onnx", "model.int8.onnx", "model.ort"}
    parity = champ["mobile_parity"]
    assert abs(parity["onnx_fp32"]["delta_map50_95"]) <= 0.005 and parity["onnx_fp32"]["passed"]
    assert parity["onnx_int8"]["mib"] < 0.35 * parity["onnx_fp32"]["mib"]
    assert champ["app_format"] in ("onnx_int8", "onnx_fp32")
    # Android's file ran through LiteRT on the test split and kept PyTorch's accuracy; the Core ML
    # converter was killed, so iOS gets nothing this time, and that is a warning, not a block.
    lite = parity["tflite"]
    assert lite["check"] == "parity" and lite["passed"] and abs(lite["delta_map50_95"]) <= 0.005
    assert parity["tflite_int8"]["passed"] or parity["tflite_int8"]["why"]
    assert not parity["mlpackage"]["passed"] and "exit status -9" in parity["mlpackage"]["why"]
    assert champ["mlpackage_uri"] is None and Path(champ["tflite_uri"]).name == "model.tflite"
    lite_det = open_detector(champ["tflite_uri"])
    assert lite_det.imgsz == 64 and lite_det.class_names == ["square", "circle", "triangle"]
    platform = check_named(result, "platform_files_ok")
    assert not platform.passed and "mlpackage not shipped" in (platform.description or "")
    assert "exit status -9" in str(mob["withheld"])
    text = render_status(collect_status(cfg))
    assert (
        "mlpackage: NOT SHIPPED (mlpackage conversion failed: exit status -9 (killed by signal 9"
        in text
    )
    assert "tflite: mAP50-95" in text
    # Each file really runs, at the trained size, with the dataset's classes in its metadata.
    for p in paths.values():
        det = OnnxDetector(p)
        assert det.imgsz == 64 and det.class_names == ["square", "circle", "triangle"]
        assert det.raw(np.zeros((1, 3, 64, 64), np.float32)).shape[0] == 4 + 3
    # int8 leaves only the head's decoding in float: no convolution of the network is excluded.
    kept = head_float_nodes(paths["onnx_uri"])
    assert kept and not any("/cv2." in n or "/cv3." in n for n in kept)
    assert any(n.endswith("Concat_5") or "Concat" in n for n in kept)
    # MLflow: onnx flavor with a signature under the registered version's run; parity metrics.
    c = tracking.client(cfg.mlflow_tracking_uri)
    v = registry_for(cfg).get(champ["version"])
    mlmodel = c.download_artifacts(v.mlflow_run_id, "mobile/onnx_fp32/MLmodel", str(cfg.home))
    text = Path(mlmodel).read_text()
    assert "onnx:" in text and "signature:" in text and "images" in text
    assert "onnx_fp32_map50_95" in c.get_run(v.mlflow_run_id).data.metrics
    # The registered version is a real MLflow model: the app's fp32 file through the onnx flavor,
    # and a pyfunc that gives what `cv-assets predict` gives for the same image and thresholds.
    # As a user's shell would (mlflow.set_tracking_uri would leak into later tests' settings).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.mlflow_tracking_uri)
    uri = f"models:/{tracking.MODEL_NAME}@champion"
    loaded = mlflow.onnx.load_model(uri)
    assert loaded.SerializeToString() == paths["onnx_uri"].read_bytes()
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.metadata.signature is not None
    scene = next(Path(cfg.landing_root).glob("*/images/*.jpg"))
    rows = pyfunc.predict(pd.DataFrame({"image": [str(scene)]}), params={"conf": 1e-6})
    doc, failed = predict("champion", [str(scene)], "onnx_fp32", 1e-6, 0.7, cfg)
    assert failed == 0 and len(rows) == len(doc["results"][0]["detections"]) > 0
    assert as_printed(rows, 0) == doc["results"][0]["detections"]
    # The Android file through LiteRT finds what the fp32 ONNX file finds on the same image.
    lite_doc, failed = predict("champion", [str(scene)], "tflite", 1e-6, 0.7, cfg)
    assert failed == 0 and lite_doc["model"]["format"] == "tflite"
    got, want = lite_doc["results"][0]["detections"], doc["results"][0]["detections"]
    assert abs(len(got) - len(want)) <= max(2, len(want) // 20)
    card = Path(champ["model_card_uri"]).read_text()
    assert "square" in card and champ["dataset_version"] in card and "| onnx_int8" in card
    # predict through the champion, without torch; one good image, one that is not an image.
    img = next(Path(cfg.landing_root).glob("*/images/*.jpg"))
    bad = cfg.home / "bad.png"
    bad.write_text("nope")
    env = dict(os.environ)
    p = subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", "predict", "--conf", "0.001", str(img), str(bad)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 1 and "bad.png" in p.stderr
    doc = json.loads(p.stdout)
    assert doc["model"]["version"] == champ["version"]
    assert doc["model"]["format"] == champ["app_format"]
    assert "detections" in doc["results"][0] and "error" in doc["results"][1]


def test_int8_over_budget_ships_fp32_and_a_failed_export_keeps_the_files(small_home, instance):
    cfg = small_home
    # (The phones' files are not made here: this test is about the ONNX files.)
    first = train(cfg, instance, mobile={"int8_max_size_ratio": 0.05, "platforms": False})
    assert first.success  # int8 failing is a warning, not a block
    int8 = check_named(first, "int8_parity_ok")
    assert not int8.passed and "fp32 ships" in (int8.description or "")
    assert "OUTSIDE (budget 0.05x)" in (int8.description or "")
    champ = collect_status(cfg)["champion"]
    assert champ["app_format"] == "onnx_fp32"
    before = {k: champ[k] for k in ("onnx_uri", "onnx_int8_uri", "ort_uri")}
    hashes = {k: sha256_file(v) for k, v in before.items()}
    # The same weights again, with an opset the exporter refuses: the step fails with the
    # exporter's reason, nothing is promoted, and the champion's files are untouched.
    again = train(cfg, instance, mobile={"opset": 99, "platforms": False})
    assert not again.success
    failure = next(e for e in again.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data)
    assert "Unsupported onnx_opset_version: 99" in text and "still available" in text
    assert materialized(again, "champion_model") is None
    after = collect_status(cfg)["champion"]
    assert {k: after[k] for k in before} == before
    assert {k: sha256_file(v) for k, v in before.items()} == hashes
