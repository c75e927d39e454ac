"""Issue 17: an annotation round's round trip through the real Label Studio server.

500 tasks (a 64 px image and one proposed box each) are pushed as one round (the images copied to
Label Studio's document root, the project created, the tasks imported with their predictions, the
task ids read back), every task is annotated over Label Studio's HTTP API (the person, not
timed), and the round is collected into one landing batch (export, 500 images and the annotation
file written). The push and the collection are what the platform adds to a person's time.
"""

from __future__ import annotations

import io
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from benchmarks.common import QUICK, Result, Skipped
from cv_assets.lib.annotation.collect import collect_round
from cv_assets.lib.annotation.labelstudio import LabelStudio
from cv_assets.lib.annotation.rounds import new_round_id
from cv_assets.lib.annotation.start import push_round
from cv_assets.lib.core.store import ArtifactStore
from cv_assets_tests.support.labelstudio import Person, binary, rect, start_labelstudio

CLASSES = ["square", "circle", "triangle"]


def _pool(store: ArtifactStore, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(17)
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        ref = store.put_bytes(f"std/img{i:04d}.jpg", buf.getvalue())
        rows.append({"sha256": ref.sha256, "stem": f"img{i:04d}", "batch_id": "bench",
                     "image_uri": ref.uri, "width": 64, "height": 64,
                     "uncertainty": 1 - i / n})  # fmt: skip
    pool = pd.DataFrame(rows)
    boxes = pool[["sha256", "stem"]].assign(class_id=1, confidence=0.3, cx=0.5, cy=0.5, w=0.3,
                                            h=0.3, **{"class": "circle"})  # fmt: skip
    return pool, boxes


def labelstudio_round_trip() -> Result:
    if not binary().exists():
        raise Skipped(f"{binary()} missing: run `make labelstudio-install`")
    n = 50 if QUICK else 500
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        root = Path(tmp)
        server = start_labelstudio(root / "ls")
        try:
            store, zone = ArtifactStore(str(root / "artifacts")), ArtifactStore(str(root / "land"))
            pool, boxes = _pool(store, n)
            client = LabelStudio(server.url, server.token)
            rid = new_round_id(datetime.now(UTC))
            t0 = time.perf_counter()
            started = push_round(client, store, rid, server.files_root / rid, pool, boxes,
                                 CLASSES, "bench", "now")  # fmt: skip
            push_s = time.perf_counter() - t0
            person = Person(server)
            t0 = time.perf_counter()
            for task in person.tasks(started.manifest["project"]):
                person.annotate(task, [rect("circle", 30, 30, 40, 40, size=64)])
            person_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = collect_round(client, store, zone, started.manifest, CLASSES, datetime.now(UTC))
            collect_s = time.perf_counter() - t0
        finally:
            server.stop()
    assert out.landed_now == n and out.counts["completed"] == n, out.counts
    total = push_s + collect_s
    return Result(
        "labelstudio_round_trip_500",
        17,
        f"{n} tasks pushed to the real Label Studio 1.23.2 (images, project, tasks with "
        "predictions) and, once annotated, collected into one landing batch",
        round(total, 2),
        "s",
        "<= 60 s",
        total <= 60,
        f"push {push_s:.1f} s, collect {collect_s:.1f} s ({n} images and the annotation file "
        f"written); the {n} annotations themselves (the person, over HTTP) {person_s:.1f} s",
    )


BENCHMARKS = [labelstudio_round_trip]
