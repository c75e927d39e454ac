import json
import os
import time
from pathlib import Path

import pytest

from cv_assets_tests.support.landing import land
from cv_assets_tests.support.processes import cli


@pytest.mark.unit
def test_synth_writes_batches_in_the_landing_contract(cfg, tmp_path):
    out = cli(
        "synth",
        "--landing",
        str(tmp_path / "land"),
        "--batches",
        "2",
        "--images-per-batch",
        "5",
        "--seed",
        "3",
        "--size",
        "64",
        "--shift",
        "brightness=0.2",
        "--corrupt-fraction",
        "0.4",
    )
    assert out.returncode == 0, out.stderr
    for bid in ("batch-0000", "batch-0001"):
        marker = json.loads((tmp_path / "land" / bid / "batch.json").read_text())
        assert marker["batch_id"] == bid and marker["classes"] == ["square", "circle", "triangle"]
        assert "brightness=0.2" in marker["source"]
    assert "2 faulty" in out.stdout


@pytest.mark.unit
def test_synth_bad_shift_is_a_clear_error_not_a_traceback(cfg, tmp_path):
    out = cli("synth", "--landing", str(tmp_path), "--shift", "glow=3")
    assert out.returncode == 2
    assert "glow" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.asset
def test_status_json_reports_batches_section(cfg, instance):
    from cv_assets_tests.support.jobs import run_intake

    (s,) = land(cfg, images=10, corrupt_fraction=0.3)
    run_intake(cfg, instance, s.batch_id)
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    b = status["batches"]
    assert b["landed"] == 1 and b["validated"] == 1
    assert b["images_landed"] == s.files_landed
    assert b["images_accepted"] + b["images_quarantined"] == b["images_landed"]
    assert b["images_quarantined"] == len(s.faults)
    for key in ("datasets", "models", "champion", "drift"):
        assert key in status
    text = cli("status")
    assert f"{s.files_landed} landed" in text.stdout


@pytest.mark.unit
def test_doctor_passes_on_a_prepared_home_and_fails_on_unwritable_storage(cfg, tmp_path):
    env = dict(os.environ) | {"YOLO_OFFLINE": "1"}
    ok = cli("doctor", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  dagster: 1.13.27" in ok.stdout and "artifact store" in ok.stdout
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    bad = cli("doctor", env=env | {"CV_ASSETS_ARTIFACTS": str(blocked / "sub")})
    assert bad.returncode == 1
    assert "FAIL  artifact store" in bad.stdout


# --- failing fast, and no secret on screen --------------------------------------------------

MLFLOW_DOWN = [  # nothing listens on 127.0.0.1:9 (the discard port)
    ("http://user:s3cret@127.0.0.1:9", "http://user:***@127.0.0.1:9"),
    ("postgresql://user:s3cret@127.0.0.1:9/mlflow", "postgresql://user:***@127.0.0.1:9/mlflow"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("uri", "shown"), MLFLOW_DOWN)
def test_status_with_mlflow_down_fails_in_seconds_naming_the_masked_uri(cfg, uri, shown):
    t0 = time.perf_counter()
    out = cli("status", env=dict(os.environ) | {"MLFLOW_TRACKING_URI": uri})
    took = time.perf_counter() - t0
    assert took < 15, f"status took {took:.1f} s with MLflow down"
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"cv-assets status: error: MLflow tracking at {shown} is unreachable")
    assert "127.0.0.1:9" in line and "s3cret" not in out.stdout + out.stderr


@pytest.mark.unit
def test_an_error_from_a_real_mlflow_client_is_printed_with_the_password_masked(cfg):
    # promote asks MLflow itself (no probe first): MLflow's own message echoes the URL it was
    # given, password included; the platform's error and the CLI both mask it.
    env = dict(os.environ) | {"MLFLOW_TRACKING_URI": "http://user:s3cret@127.0.0.1:9"}
    out = cli("promote", "1", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "MLflow tracking at http://user:***@127.0.0.1:9 is unreachable" in out.stderr
    assert "API request to http://user:***@127.0.0.1:9/api/" in out.stderr
    assert "s3cret" not in out.stdout + out.stderr


def external_data_detector(folder: Path) -> Path:
    """A real detector whose tensors live in ``det.bin`` beside it (ONNX external data)."""
    import onnx
    from onnx import numpy_helper

    from cv_assets_tests.support.models import constant_detector

    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(constant_detector(folder.parent / "plain.onnx")))
    for t in model.graph.initializer:  # only tensors held as raw bytes can live outside
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
    path = folder / "det.onnx"
    onnx.save_model(
        model, str(path), save_as_external_data=True, location="det.bin", size_threshold=0
    )
    return path


def unloadable_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Model files predict cannot load, each with the reason it must give."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    good = external_data_detector(tmp_path / "model")
    # External data pointing outside the model's folder: onnxruntime must refuse to read it,
    # even though the bytes there are exactly the right ones.
    escape = onnx.load(str(good), load_external_data=False)
    for t in escape.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.bin"
    shutil.copy(good.parent / "det.bin", tmp_path / "outside.bin")
    onnx.save_model(escape, str(tmp_path / "model" / "escape.onnx"))
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:40])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 8, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3, 8, 8))],
    )
    relu = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(relu))
    return {
        "external_data_outside": (tmp_path / "model" / "escape.onnx", "escapes model directory"),
        "not_onnx": (text, "Protobuf parsing failed"),
        "truncated": (truncated, "Protobuf parsing failed"),
        "missing": (tmp_path / "nowhere.onnx", "no such file"),
        "not_a_detector": (relu, "not a detector"),
    }


@pytest.mark.unit
@pytest.mark.parametrize(
    "kind", ["external_data_outside", "not_onnx", "truncated", "missing", "not_a_detector"]
)
def test_predict_refuses_a_model_it_cannot_load_in_one_line(tmp_path, kind):
    from PIL import Image

    img = tmp_path / "img.jpg"
    Image.new("RGB", (64, 32), (10, 20, 30)).save(img)
    path, reason = unloadable_models(tmp_path)[kind]
    out = cli("predict", "--model", str(path), str(img))
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"cv-assets predict: cannot load model {path}: ") and reason in line


@pytest.mark.unit
def test_predict_loads_external_data_that_stays_in_the_model_folder(tmp_path):
    from PIL import Image

    img = tmp_path / "img.jpg"
    Image.new("RGB", (64, 32), (10, 20, 30)).save(img)
    model = external_data_detector(tmp_path / "model")
    out = cli("predict", "--model", str(model), str(img))
    assert out.returncode == 0, out.stderr
    (d,) = json.loads(out.stdout)["results"][0]["detections"]
    assert d["class"] == "circle"
