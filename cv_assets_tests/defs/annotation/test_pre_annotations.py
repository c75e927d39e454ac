"""pre_annotations on a real instance: the champion's proposals for a batch's unlabelled pool."""

import hashlib
import io
import json

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.annotation.proposals import image_uncertainty
from cv_assets.lib.core import layout
from cv_assets.lib.core.onnx_detect import predict_files
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import QUIET, ingest, materialized, run_intake, train

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


def test_auto_accept_lands_confident_images_as_train_only_model_labels(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success
    (bid,) = ingest(cfg, instance, images=12, size=96, seed=70, unlabelled_fraction=0.5)
    defs = build_defs(cfg)
    job = defs.resolve_job_def("batch_monitoring_job")
    zone = open_store(cfg, cfg.landing_root)

    def monitor(**config):
        # The tiny champion's confidences are all under 0.01: a floor under them keeps its boxes.
        rc = QUIET | {"ops": {"pre_annotations": {"config": {"floor": 1e-4} | config}}}
        r = job.execute_in_process(partition_key=bid, instance=instance, run_config=rc)
        assert r.success
        return materialized(r, "pre_annotations")

    # Off by default: the proposals are written, nothing is landed.
    meta = monitor()
    assert meta is not None and "auto_accepted" not in meta
    assert not [k for k in zone.list("") if k.startswith("auto-")]
    store = open_store(cfg)
    version = meta["champion_version"]
    boxes = pd.read_parquet(
        io.BytesIO(store.get_bytes(f"proposals/{bid}/v{version}/boxes.parquet"))
    )
    pool = pd.read_parquet(io.BytesIO(store.get_bytes(f"validated/{bid}/unlabelled.parquet")))
    # An accept_conf that the image whose weakest box is strongest reaches (the tiny champion
    # scores every image alike, so all may pass; the rule itself is unit-tested).
    weakest: dict[str, float] = {}
    for sha, conf in zip(boxes["sha256"], boxes["confidence"], strict=True):
        weakest[sha] = min(weakest.get(sha, 1.0), float(conf))
    accept_conf = max(weakest.values())
    expect = {sha for sha, c in weakest.items() if c >= accept_conf}
    assert expect and len(weakest) == len(pool)

    meta = monitor(auto_accept=True, accept_conf=accept_conf)
    assert meta is not None
    auto = f"auto-{bid}-v{version}"
    assert meta["auto_accept_batch"] == auto and meta["auto_accepted"] == len(expect)
    marker = json.loads(zone.get_bytes(f"{auto}/batch.json"))
    assert (marker["source"], marker["format"], marker["labels"]) == (
        f"model:v{version}", "yolo", "full")  # fmt: skip
    by_sha = pool.set_index("sha256")
    for sha in expect:
        stem = by_sha.loc[sha, "stem"]
        assert hashlib.sha256(zone.get_bytes(f"{auto}/images/{stem}.jpg")).hexdigest() == sha
        lines = zone.get_bytes(f"{auto}/labels/{stem}.txt").decode().splitlines()
        assert len(lines) == int((boxes["sha256"] == sha).sum())

    # Intake takes each as the labelling of its pool image, with the model as its label source.
    assert run_intake(cfg, instance, auto, run_config=QUIET).success
    samples = pd.read_parquet(io.BytesIO(store.get_bytes(layout.validated_table(auto, "samples"))))
    assert set(samples["sha256"]) == expect
    assert set(samples["label_source"]) == {f"model:v{version}"}
    pool_paths = {sha: f"{bid}/{by_sha.loc[sha, 'source']}" for sha in expect}
    assert dict(zip(samples["sha256"], samples["supersedes"], strict=True)) == pool_paths

    # The next dataset version trains on them and never validates or tests on them.
    ds = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("training_dataset")})  # fmt: skip
    r = ds.execute_in_process(instance=instance, run_config=QUIET)
    rows = pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(
        r.output_for_node("training_dataset")["samples"]["uri"]))))  # fmt: skip
    mine = rows[rows["sha256"].isin(sorted(expect))]
    assert len(mine) == len(expect) and set(mine["split"]) == {"train"}

    # Materialized again, the batch is found landed and is not written twice.
    meta = monitor(auto_accept=True, accept_conf=accept_conf)
    assert meta is not None and meta["auto_accepted"] == len(expect)
