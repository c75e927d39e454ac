"""pre_annotations on a real instance: the champion's proposals for a batch's unlabelled pool."""

import io

import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.annotation.proposals import image_uncertainty
from cv_assets.lib.core.onnx_detect import predict_files
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import QUIET, ingest, materialized, train

pytestmark = pytest.mark.slow


def test_the_champion_pre_annotates_the_unlabelled_images_of_a_batch(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success
    (bid,) = ingest(cfg, instance, images=12, size=96, seed=70, unlabelled_fraction=0.5)
    job = build_defs(cfg).resolve_job_def("batch_monitoring_job")
    # The job that monitors each validated batch also pre-annotates it.
    r = job.execute_in_process(partition_key=bid, instance=instance, run_config=QUIET)
    assert r.success
    meta = materialized(r, "pre_annotations")
    assert meta is not None and meta["images"] == 6 and meta["champion_version"] == "1"
    store = open_store(cfg)
    images = pd.read_parquet(io.BytesIO(store.get_bytes(f"proposals/{bid}/v1/images.parquet")))
    boxes = pd.read_parquet(io.BytesIO(store.get_bytes(f"proposals/{bid}/v1/boxes.parquet")))
    pool = pd.read_parquet(io.BytesIO(store.get_bytes(f"validated/{bid}/unlabelled.parquet")))
    assert sorted(images["stem"]) == sorted(pool["stem"]) and meta["boxes"] == len(boxes)
    # The same numbers computed here, from the champion's ONNX file and the pooled images.
    onnx = store.local_path("mobile")
    assert onnx is not None
    (onnx_file,) = [p for p in onnx.rglob("model.onnx")]
    paths = [str(store.local_path(store.key_of(u))) for u in pool["image_uri"]]
    found = predict_files(onnx_file, paths, conf=0.05)
    expect = {
        stem: image_uncertainty([float(c) for c in f[:, 4]])
        for stem, f in zip(pool["stem"], found, strict=True)
    }
    got = dict(zip(images["stem"], images["uncertainty"], strict=True))
    assert got == pytest.approx(expect)
    assert list(images["uncertainty"]) == sorted(images["uncertainty"], reverse=True)
