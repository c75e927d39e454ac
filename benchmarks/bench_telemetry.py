"""Issue 19: the telemetry service ingests events faster than a fleet of apps sends them.

The real service (``python -m cv_assets.telemetry`` under uvicorn, one process) on 127.0.0.1, with
validation and the durable spool on (WAL, ``synchronous=FULL``: one fsync per batch), takes
batches of 500 realistic events (0..5 detections each, ~600 bytes) from two client threads for
about 10 s. Afterwards the service is stopped (its shutdown flush) and the Parquet output is
counted: the benchmark fails if one accepted event is missing or doubled.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time

import requests

from benchmarks.common import QUICK, WORK, Result
from cv_assets.dev.home import prepare_home
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.read_side import open_store
from cv_assets_tests.telemetry.service import (
    TOKEN,
    TelemetryServer,
    make_event,
    parquet_rows,
    register_models,
)

BATCH = 500
SENDERS = 2


def ingest_throughput() -> Result:
    seconds = 3.0 if QUICK else 10.0
    root = WORK / "telemetry"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(root / "home")})
    prepare_home(cfg)
    register_models(cfg)
    # The rate limit is lifted: this measures the service, not the limiter's default.
    server = TelemetryServer(
        cfg,
        root / "service.log",
        CV_ASSETS_TELEMETRY_RATE="1000000",
        CV_ASSETS_TELEMETRY_FLUSH_S="2",
    ).start()
    rng = random.Random(19)
    # Bodies made before the clock starts: the apps' JSON encoding is not the service's cost.
    bodies = [
        json.dumps({"schema_version": 1, "events": [make_event(rng) for _ in range(BATCH)]})
        for _ in range(int(seconds * 6000 / BATCH) + 20)
    ]
    lock = threading.Lock()
    totals = {"accepted": 0, "rejected": 0, "batches": 0}
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def send(worker: int) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {TOKEN}"
            for i in range(worker, len(bodies), SENDERS):
                if time.perf_counter() > deadline:
                    return
                r = session.post(f"{server.url}/v1/events", data=bodies[i], timeout=60)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    return
                body = r.json()
                with lock:
                    totals["accepted"] += body["accepted"]
                    totals["rejected"] += len(body["rejected"])
                    totals["batches"] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=send, args=(w,)) for w in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    server.stop()  # SIGTERM: the shutdown flush writes what the timer had not
    ids = [r["event_id"] for r in parquet_rows(open_store(cfg))]
    lossless = not errors and len(ids) == len(set(ids)) == totals["accepted"]
    rate = totals["accepted"] / elapsed
    return Result(
        "ingest_throughput",
        19,
        f"events/s through the real telemetry service on 127.0.0.1 (batches of {BATCH}, "
        f"{SENDERS} clients, validation and the fsynced spool on), then flushed to Parquet",
        round(rate),
        "events/s",
        ">= 2000 events/s, none lost",
        rate >= 2000 and lossless and totals["rejected"] == 0,
        f"{totals['accepted']:,} events in {totals['batches']} batches in {elapsed:.1f}s, "
        f"{totals['rejected']} rejected; Parquet holds {len(ids):,} rows, "
        f"{len(set(ids)):,} distinct (== accepted: {'yes' if lossless else 'NO'})"
        + (f"; errors: {errors[:2]}" if errors else ""),
    )


BENCHMARKS = [ingest_throughput]
