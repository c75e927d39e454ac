"""champion_performance on a real instance: the champion's mAP on new data and on its own."""

import io
import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.monitoring.performance import champion_performance
from cv_assets.lib.core.metrics import evaluate_detections, read_yolo_truth
from cv_assets.lib.core.onnx_detect import predict_files
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import QUIET, ingest, materialized, train

pytestmark = pytest.mark.slow

performance_job = dg.define_asset_job(
    "champion_performance_test_job",
    selection=dg.AssetSelection.assets(champion_performance),
)


def _run(defs, instance, batch: str, **config) -> dict:
    rc = QUIET | {"ops": {"champion_performance": {"config": config}}}
    r = defs.resolve_job_def("champion_performance_test_job").execute_in_process(
        partition_key=batch, instance=instance, run_config=rc
    )
    assert r.success
    meta = materialized(r, "champion_performance")
    assert meta is not None
    return meta


def _direct_metrics(cfg, batch: str, onnx_uri: str) -> dict:
    """The batch's mAP from its stored samples, computed without the asset or lib/performance."""
    store = open_store(cfg)
    samples = pd.read_parquet(
        io.BytesIO(store.get_bytes(f"validated/{batch}/samples.parquet"))
    ).sort_values("sha256")
    images = [str(store.local_path(store.key_of(u))) for u in samples["image_uri"]]
    truths = [
        read_yolo_truth(store.get_bytes(store.key_of(u)).decode()) for u in samples["label_uri"]
    ]
    onnx = store.local_path(store.key_of(onnx_uri))
    assert onnx is not None
    m = evaluate_detections(predict_files(onnx, images), truths, len(cfg.classes))
    return {"map50": round(m.map50, 4), "map50_95": round(m.map50_95, 4), "images": m.n_images}


def test_champion_performance_measures_new_batches_and_never_judges_training_ones(
    small_home, instance
):
    cfg = small_home
    trained_on = sorted(instance.get_dynamic_partitions("batches"))
    assert train(cfg, instance).success
    (new,) = ingest(cfg, instance, batches=1, images=40, size=96, seed=60)
    defs = dg.Definitions.merge(build_defs(cfg), dg.Definitions(jobs=[performance_job]))
    store = open_store(cfg)
    champion = json.loads(store.get_bytes("registry/champion.json"))

    fresh = _run(defs, instance, new)
    assert fresh["images"] == 40 and fresh["champion_version"] == champion["version"] == "1"
    assert 0.0 <= fresh["map50_95"] <= fresh["map50"] <= 1.0
    assert {k: fresh[k] for k in ("map50", "map50_95", "images")} == _direct_metrics(
        cfg, new, champion["mobile"]["onnx_uri"]
    )
    assert fresh["champion_test_map50"] == pytest.approx(champion["map50"])
    assert fresh["drop"] == pytest.approx(champion["map50"] - fresh["map50"], abs=1e-4)
    assert fresh["in_training_data"] is False
    assert fresh["degraded"] is (fresh["drop"] > 0.10)
    report = Path(str(fresh["report"]))
    assert report == Path(cfg.artifacts_root) / "performance" / new / "v1.json"
    per_class = json.loads(report.read_text())["per_class"]
    assert [c["class"] for c in per_class] == list(cfg.classes)
    assert sum(c["instances"] for c in per_class) > 0

    # A margin below the measured drop must trip, and the reason must carry the numbers.
    margin = round(float(fresh["drop"]) - 0.05, 3)
    tripped = _run(defs, instance, new, margin=margin)
    assert tripped["degraded"] is True
    reason = str(tripped["reason"])
    assert reason.startswith("degraded:") and f"margin {margin:.3f}" in reason
    said = re.search(r"batch mAP50 (\d\.\d{3}) is (-?\d\.\d{3}) below", reason)
    assert said is not None and f"test mAP50 {champion['map50']:.3f}" in reason
    assert float(said[1]) == pytest.approx(fresh["map50"], abs=6e-4)
    assert float(said[2]) == pytest.approx(fresh["drop"], abs=6e-4)

    # The same margin on a batch the champion trained on: measured, never degraded.
    old = _run(defs, instance, trained_on[0], margin=margin)
    assert old["in_training_data"] is True and old["degraded"] is False
    assert old["images"] == 24 and "training dataset" in str(old["reason"])
