"""Where the per-run costs grow with history: the numbers behind docs/scaling.md.

``python -m benchmarks.scale_probe`` prints them. They are not goals (the ratio benchmarks in
``run.py`` are); they show how two costs that grow with the number of batches taken in behave at
1x, 10x and 100x of the 10,000-batch design point's images:

- intake's duplicate check reads one small index file per earlier batch (``DedupIndex``);
- ``training_dataset`` concatenates every batch's accepted-samples table (``build_snapshot``).

Both run on the local artifact store, so S3's per-request latency comes on top (see the doc).
"""

import json
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import WORK
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.dataset.snapshot import build_snapshot
from cv_assets.lib.ingest.raw import DedupIndex
from cv_assets.lib.synth.batches import CLASSES


def _digests(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{x:064x}" for x in rng.integers(0, 2**62, size=n)]


def dedup_read(batches: int, per: int) -> float:
    """Seconds for one intake's duplicate lookup with ``batches`` earlier batches on disk."""
    root = WORK / "scale_dedup"
    shutil.rmtree(root, ignore_errors=True)
    store = ArtifactStore(str(root))
    rng = np.random.default_rng(1)
    for i in range(batches):
        images = {d: f"images/{k:04d}.jpg" for k, d in enumerate(_digests(rng, per))}
        body = {"batch_id": f"b{i:06d}", "first_validated_at": f"{i:09d}", "images": images}
        store.put_bytes(f"dedup/b{i:06d}.json", json.dumps(body).encode())
    t0 = time.perf_counter()
    seen = DedupIndex(store).seen_before("new-batch")
    t = time.perf_counter() - t0
    assert len(seen) == batches * per
    shutil.rmtree(root, ignore_errors=True)
    return t


def dedup_read_s3(batches: int, per: int, latency_s: float = 0.015) -> dict[int, float]:
    """Seconds of the same lookup on S3 (moto) behind a proxy that adds a remote round trip.

    Measured with the index read one object at a time and with ``READ_WORKERS`` at a time.
    """
    import os
    import uuid

    from moto.server import ThreadedMotoServer

    from cv_assets.lib.core.store import s3_client
    from cv_assets.lib.ingest import raw
    from cv_assets_tests.integration.flaky import FlakyProxy
    from cv_assets_tests.support.processes import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}.items():
        os.environ.setdefault(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    direct = f"http://127.0.0.1:{port}"
    bucket = f"cv-{uuid.uuid4().hex[:8]}"
    client = s3_client(direct)
    client.create_bucket(Bucket=bucket)
    rng = np.random.default_rng(3)
    for i in range(batches):  # written straight to the server: only the reads pay the latency
        images = {d: f"images/{k:04d}.jpg" for k, d in enumerate(_digests(rng, per))}
        body = {"batch_id": f"b{i:06d}", "first_validated_at": f"{i:09d}", "images": images}
        client.put_object(Bucket=bucket, Key=f"dedup/b{i:06d}.json", Body=json.dumps(body))
    times: dict[int, float] = {}
    try:
        with FlakyProxy(direct, fail_rate=0.0, latency_s=latency_s) as proxy:
            store = ArtifactStore(f"s3://{bucket}", proxy.url)
            saved = raw.READ_WORKERS
            for workers in (1, saved):
                raw.READ_WORKERS = workers
                t0 = time.perf_counter()
                seen = DedupIndex(store).seen_before("new-batch")
                times[workers] = time.perf_counter() - t0
                assert len(seen) == batches * per
            raw.READ_WORKERS = saved
    finally:
        server.stop()
    return times


def snapshot(batches: int, per: int) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one dataset snapshot over ``batches`` x ``per`` images."""
    rng = np.random.default_rng(2)
    tables = []
    for i in range(batches):
        d = _digests(rng, per)
        tables.append(
            (
                f"b{i:06d}",
                pd.DataFrame(
                    {
                        "stem": [f"{k:04d}" for k in range(per)],
                        "sha256": d,
                        "label_sha256": d,
                        "image_uri": [f"s3://bucket/std/b{i:06d}/{k:04d}.jpg" for k in range(per)],
                        "label_uri": [f"s3://bucket/std/b{i:06d}/{k:04d}.txt" for k in range(per)],
                        "class_ids": ["0 1"] * per,
                    }
                ),
            )
        )
    t0 = time.perf_counter()
    snap = build_snapshot(tables, CLASSES)
    t = time.perf_counter() - t0
    assert len(snap.samples) == batches * per
    return t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def per_batch_runs(per: int = 128) -> dict[str, float]:
    """Seconds of one intake run and one monitoring run of a ``per``-image batch (in-process).

    A tiny champion (2 epochs at 64 px, with its ONNX file) is trained first, so the monitoring
    run does its real work: drift report, champion performance and review queue.
    """
    import subprocess

    import dagster as dg

    from benchmarks.bench_intake import QUIET, _fresh, _home
    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES
    from cv_assets.lib.synth.batches import write_batches

    cfg = _home(_fresh("scale_runs"))
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    defs = build_defs(cfg)
    batches = write_batches(Path(cfg.landing_root), 3, per, seed=21, size=320)
    ids = [b.batch_id for b in batches]
    instance.add_dynamic_partitions(BATCHES, ids)
    intake = defs.resolve_job_def("intake_job")
    times: dict[str, float] = {}
    for b in ids:
        t0 = time.perf_counter()
        assert intake.execute_in_process(
            partition_key=b, instance=instance, run_config=QUIET
        ).success
        times["intake"] = time.perf_counter() - t0
    tiny = {"epochs": 2, "imgsz": 64, "batch": 16, "min_train_images": 8}
    rc = QUIET | {
        "ops": {
            "yolo_model": {"config": tiny},
            "model_evaluation": {"config": {"min_map50": 0.0}},
        }
    }
    assert (
        defs.resolve_job_def("training_job")
        .execute_in_process(instance=instance, run_config=rc)
        .success
    )
    (new,) = write_batches(Path(cfg.landing_root), 1, per, seed=22, size=320, prefix="new")
    instance.add_dynamic_partitions(BATCHES, [new.batch_id])
    assert intake.execute_in_process(
        partition_key=new.batch_id, instance=instance, run_config=QUIET
    ).success
    monitoring = defs.resolve_job_def("batch_monitoring_job")
    t0 = time.perf_counter()
    assert monitoring.execute_in_process(
        partition_key=new.batch_id, instance=instance, run_config=QUIET
    ).success
    times["monitoring"] = time.perf_counter() - t0
    instance.dispose()
    # What a launched run pays before its first step: a new process loading the code.
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import cv_assets.definitions"], check=True)
    times["code_load"] = time.perf_counter() - t0
    return times


def main(argv: list[str]) -> int:
    per = 128
    for batches in [int(a) for a in argv] or [1_000, 10_000]:
        t = dedup_read(batches, per)
        print(f"dedup lookup, {batches:,} earlier batches x {per} images: {t:.2f} s")
    n, lat = 1_000, 0.015
    s3 = dedup_read_s3(n, per, lat)
    print(
        f"dedup lookup on S3 (moto behind a {lat * 1e3:.0f} ms proxy), {n:,} earlier batches: "
        + ", ".join(f"{w} at a time {t:.1f} s" for w, t in s3.items())
    )
    for batches in [int(a) for a in argv] or [1_000, 10_000]:
        t, rss = snapshot(batches, per)
        print(
            f"dataset snapshot, {batches:,} batches x {per} images ({batches * per:,} rows): "
            f"{t:.2f} s, process peak RSS {rss:,.0f} MiB"
        )
    # Last: it trains, which would dominate the snapshot's peak RSS above.
    runs = per_batch_runs(per)
    print(
        f"one {per}-image batch (320 px), in-process: intake run {runs['intake']:.1f} s, "
        f"monitoring run {runs['monitoring']:.1f} s; a launched run first loads the code "
        f"in a new process: {runs['code_load']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
