"""The detector as an MLflow 3 logged model: what an MLflow user loads from the registry."""

import json
from pathlib import Path

import mlflow.onnx
import mlflow.pyfunc
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper
from PIL import Image

from cv_assets.cli.predict import predict
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.synth.batches import write_batches
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.mlflow_model import COLUMNS, ModelInputError, log_detector_model
from cv_assets.lib.tracking.registry import Registry, RegistryError
from cv_assets_tests.support.models import as_printed

pytestmark = pytest.mark.unit

CLASSES = ["square", "circle", "triangle"]


def pooled_detector(path: Path, imgsz: int = 32, grid: int = 4) -> Path:
    """A real ONNX detector whose answer depends on the picture.

    One anchor per cell of a ``grid`` x ``grid`` partition of the input; a cell's box is the cell
    and its score for class k is the cell's mean of RGB channel k. So red, green and blue areas
    are found as ``square``, ``circle`` and ``triangle``, and the grey letterbox padding
    (114/255) falls below a confidence of 0.5.
    """
    k, n = imgsz // grid, grid * grid
    boxes = np.array(
        [
            [(c + 0.5) * k, (r + 0.5) * k, 0.9 * k, 0.9 * k]
            for r in range(grid)
            for c in range(grid)
        ],
        np.float32,
    ).T[None]  # (1, 4, n), anchors in the row-major order of the pooled cells
    nodes = [
        helper.make_node("AveragePool", ["images"], ["cells"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Reshape", ["cells", "shape"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, 3, imgsz, imgsz))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, (1, 7, n))],
        initializer=[
            helper.make_tensor("boxes", TensorProto.FLOAT, boxes.shape, boxes.ravel().tolist()),
            helper.make_tensor("shape", TensorProto.INT64, (3,), [1, 3, n]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="names", value=str(dict(enumerate(CLASSES))))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MLflow on SQLite in tmp_path (also the process-wide URI that ``models:/`` URIs use)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    c = tracking.client(uri)
    tracking.experiment_id(c, artifact_location=str(tmp_path / "mlruns"))
    reg = Registry(c, "cv_assets_detector", ArtifactStore(str(tmp_path / "artifacts")))
    return c, reg, tmp_path


def trained(c, tmp_path: Path, seed: int = 0) -> tuple[str, Path, Path]:
    """A finished training as the platform leaves it: a run, weights and the app's ONNX file."""
    run_id = tracking.start_run(c, "train", tracking.dagster_tags("r1", "yolo_model"))
    weights = tmp_path / f"best{seed}.pt"
    weights.write_bytes(f"weights of training {seed}".encode())
    return run_id, weights, pooled_detector(tmp_path / f"model{seed}.onnx")


def log(c, run_id: str, weights: Path, onnx_path: Path, **kw) -> str:
    return log_detector_model(
        c,
        run_id,
        onnx_path,
        weights,
        class_names=CLASSES,
        imgsz=32,
        metrics={"map50": 0.91, "map50_95": 0.62, "precision": 0.88, "recall": 0.8},
        tags={"dataset_version": "0123456789abcdef"},
        dagster_tags=tracking.dagster_tags("r2", "champion_model"),
        **kw,
    )


def identity_tags(weights: Path, sha: str) -> dict[str, str]:
    return {
        "weights_sha256": sha,
        "weights_uri": str(weights),
        "dataset_version": "0123456789abcdef",
        "imgsz": "32",
        "class_names": json.dumps(CLASSES),
        "status": "registered",
    }


def register(c, reg: Registry, tmp_path: Path, seed: int = 0):
    from cv_assets.lib.tracking.mlflow_model import file_sha256

    run_id, weights, onnx_path = trained(c, tmp_path, seed)
    uri = log(c, run_id, weights, onnx_path)
    mv = reg.register(uri, run_id, identity_tags(weights, file_sha256(weights)))
    return mv, uri, run_id, weights, onnx_path


@pytest.fixture
def scenes(tmp_path: Path) -> list[Path]:
    """Two synthetic scenes from the platform's generator, one cropped to a wide picture."""
    (s,) = write_batches(tmp_path / "landing", 1, 2, seed=3, size=96)
    images = sorted((tmp_path / "landing" / s.batch_id / "images").iterdir())
    wide = tmp_path / "wide.jpg"
    Image.open(images[1]).crop((0, 20, 96, 76)).save(wide)  # 96 x 56: letterboxed with padding
    return [images[0], wide]


def test_the_champion_loads_with_mlflow_onnx_as_the_apps_file(home):
    c, reg, tmp_path = home
    mv, uri, *_, onnx_path = register(c, reg, tmp_path)
    reg.promote(mv.version, "gate", "first model")
    proto = mlflow.onnx.load_model("models:/cv_assets_detector@champion")
    assert proto.SerializeToString() == onnx_path.read_bytes()
    assert mv.model_uri == uri and uri.startswith("models:/m-")
    # The version's files are the logged model's, not a folder of the run's artifacts.
    version = c.get_model_version("cv_assets_detector", mv.version)
    assert version.source == c.get_logged_model(uri.removeprefix("models:/")).artifact_location
    assert "/models/m-" in version.source and version.run_id == mv.mlflow_run_id


def test_the_pyfunc_gives_the_detections_of_cv_assets_predict(home, scenes):
    c, reg, tmp_path = home
    mv, *_, onnx_path = register(c, reg, tmp_path)
    reg.promote(mv.version, "gate", "first model")
    model = mlflow.pyfunc.load_model("models:/cv_assets_detector@champion")
    frame = pd.DataFrame({"image": [p.read_bytes() for p in scenes]})
    out = model.predict(frame, params={"conf": 0.5, "iou": 0.5})
    assert list(out.columns) == COLUMNS
    doc, failed = predict(str(onnx_path), [str(p) for p in scenes], conf=0.5, iou=0.5)
    assert failed == 0
    for i, result in enumerate(doc["results"]):
        assert as_printed(out, i) == result["detections"]
    assert len(out) >= 4 and out["image"].nunique() == 2  # something to compare in each
    # A path column gives the same detections as the bytes; a bad row is named.
    by_path = model.predict(pd.DataFrame({"image": [str(p) for p in scenes]}), {"conf": 0.5})
    assert by_path.equals(model.predict(frame, params={"conf": 0.5}))
    with pytest.raises(ModelInputError, match="row 1: not a decodable image"):
        model.predict(pd.DataFrame({"image": [scenes[0].read_bytes(), b"not a jpeg"]}))


def test_the_model_has_a_signature_an_input_example_weights_and_its_identity(home):
    c, reg, tmp_path = home
    mv, uri, run_id, weights, _ = register(c, reg, tmp_path)
    model = mlflow.pyfunc.load_model(uri)
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["image"] and sig.outputs.input_names() == COLUMNS
    assert {p.name: p.default for p in sig.params.params} == {
        "conf": 0.25,
        "iou": 0.7,
        "max_det": 300,
    }
    example = model.input_example
    assert isinstance(example, pd.DataFrame) and isinstance(example["image"][0], bytes)
    assert list(model.predict(example).columns) == COLUMNS  # the example runs as given
    meta = model.metadata.metadata or {}
    assert meta["class_names"] == CLASSES and meta["imgsz"] == 32
    assert meta["weights_sha256"] == mv.weights_sha256 and meta["training_run_id"] == run_id
    flavors = model.metadata.flavors
    assert flavors["python_function"]["loader_module"] == "cv_assets.lib.tracking.mlflow_model"
    assert flavors["onnx"]["extra_files"] == [{"path": "extra_files/best.pt"}]
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    assert (local / "extra_files" / "best.pt").read_bytes() == weights.read_bytes()


def test_metrics_are_mlflow_metrics_of_the_model_and_the_run_not_tags(home):
    c, reg, tmp_path = home
    mv, uri, run_id, *_ = register(c, reg, tmp_path)
    logged = c.get_logged_model(uri.removeprefix("models:/"))
    assert {m.key: m.value for m in logged.metrics} == {
        "map50": 0.91,
        "map50_95": 0.62,
        "precision": 0.88,
        "recall": 0.8,
    }
    assert {m.dataset_digest for m in logged.metrics} == {"0123456789abcdef"}
    assert c.get_run(run_id).data.metrics["map50_95"] == 0.62
    version_tags = c.get_model_version("cv_assets_detector", mv.version).tags
    assert not {"map50", "map50_95", "precision", "recall"} & set(version_tags)
    assert version_tags["model_uri"] == uri and version_tags["status"] == "registered"
    assert (mv.map50, mv.map50_95, mv.metrics["recall"]) == (0.91, 0.62, 0.8)
    assert logged.tags["dagster_asset_key"] == "champion_model" and logged.status == "READY"


def test_the_same_weights_log_and_register_once(home):
    c, reg, tmp_path = home
    first, uri, run_id, weights, onnx_path = register(c, reg, tmp_path)
    again = log(c, run_id, weights, onnx_path)
    assert again == uri
    assert reg.register(again, run_id, identity_tags(weights, first.weights_sha256)) == first
    other, *_ = register(c, reg, tmp_path, seed=1)
    assert other.version != first.version
    assert [v.version for v in reg.versions()] == [first.version, other.version]
    models = c.search_logged_models([c.get_run(run_id).info.experiment_id])
    assert len(models) == 2


def test_weights_that_do_not_match_their_recorded_hash_are_not_logged(home):
    c, _, tmp_path = home
    run_id, weights, onnx_path = trained(c, tmp_path)
    with pytest.raises(ValueError, match=r"best0\.pt hashes to [0-9a-f]{64}, its record says abc"):
        log_detector_model(
            c, run_id, onnx_path, weights, class_names=CLASSES, imgsz=32, metrics={},
            tags={"weights_sha256": "abc"},
        )  # fmt: skip
    assert not c.search_logged_models([c.get_run(run_id).info.experiment_id])


def test_a_model_that_was_not_logged_completely_is_not_registered(home):
    c, reg, _ = home
    run_id = tracking.start_run(c, "train", {})
    exp = c.get_run(run_id).info.experiment_id
    pending = c.create_logged_model(exp, name="detector", source_run_id=run_id)  # never READY
    with pytest.raises(RegistryError, match=r"is PENDING, not READY"):
        reg.register(f"models:/{pending.model_id}", run_id, {"weights_sha256": "aaa"})
    assert reg.versions() == [] and reg.champion() is None


def test_the_training_dataset_is_a_run_input_whose_digest_is_its_version(home):
    c, _, tmp_path = home
    tags = tracking.dagster_tags("a1b2", "yolo_model", None)
    assert tags == {
        "dagster_run_id": "a1b2",
        "dagster_asset_key": "yolo_model",
        "dagster_partition": "",
    }
    run_id = tracking.start_run(c, "train", tags)
    samples = str(tmp_path / "datasets" / "0123456789abcdef" / "samples.parquet")
    for _ in range(2):  # logged again by a retried run: still one input
        tracking.log_dataset_input(
            c, run_id, "0123456789abcdef", samples, 120,
            splits={"train": 96, "val": 12, "test": 12}, classes=CLASSES,
        )  # fmt: skip
    run = c.get_run(run_id)
    (inp,) = run.inputs.dataset_inputs
    ds = inp.dataset
    assert (ds.name, ds.digest, ds.source_type) == ("training_dataset", "0123456789abcdef", "local")
    assert json.loads(ds.source)["uri"] == samples
    profile = json.loads(ds.profile)
    assert profile["num_rows"] == 120 and profile["splits"]["test"] == 12
    assert profile["classes"] == CLASSES
    assert {(t.key, t.value) for t in inp.tags} == {("mlflow.data.context", "training")}
    assert {k: run.data.tags[k] for k in tags} == tags


def test_a_model_logged_before_the_lib_regrouping_still_loads(home, scenes):
    c, reg, tmp_path = home
    _, uri, *_ = register(c, reg, tmp_path)
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "old")))
    # What 0.1.0 wrote: the same files, with the loader under its old module path.
    mlmodel = local / "MLmodel"
    text = mlmodel.read_text()
    assert "loader_module: cv_assets.lib.tracking.mlflow_model" in text
    mlmodel.write_text(
        text.replace("cv_assets.lib.tracking.mlflow_model", "cv_assets.lib.mlflow_model")
    )
    old = mlflow.pyfunc.load_model(str(local))
    assert old.metadata.flavors["python_function"]["loader_module"] == "cv_assets.lib.mlflow_model"
    frame = pd.DataFrame({"image": [str(p) for p in scenes]})
    expected = mlflow.pyfunc.load_model(uri).predict(frame, params={"conf": 0.5})
    got = old.predict(frame, params={"conf": 0.5})
    assert list(got.columns) == COLUMNS and len(got) > 0 and got.equals(expected)
