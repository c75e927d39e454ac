"""The landing sensor's tick on the deployment's storage (issue 6): Dagster on PostgreSQL.

The same measurement as ``bench_intake.sensor_tick`` (one tick with 10,000 known batches and one
new one), with the instance read from a real PostgreSQL server on 127.0.0.1 instead of SQLite:
a throwaway cluster started from Debian's binaries (``.ci/services.sh``), durable settings
(fsync on) as a deployment would run it.
"""

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from benchmarks.bench_intake import _fresh
from benchmarks.common import QUICK, Result
from cv_assets.lib.settings import PlatformConfig
from cv_assets.lib.synth import write_batches


def sensor_tick_postgres() -> Result:
    import dagster as dg

    from cv_assets.defs.ingest.partitions import BATCHES
    from cv_assets.defs.ingest.sensors import landing_sensor
    from cv_assets.home import prepare_home
    from cv_assets.lib.landing import LandingCursor
    from cv_assets.resources.environment import platform_resources
    from cv_assets_tests.integration.pg import (
        postgres_dagster_yaml,
        postgres_instance_env,
        start_cluster,
    )

    n = 2000 if QUICK else 10_000
    root = _fresh("sensor_tick_postgres")
    cluster = start_cluster(("dagster",), durable=True)
    saved = dict(os.environ)
    try:
        cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(root / "home")})
        # The deployment's instance, minus its S3 compute logs (nothing here talks to S3).
        conf = postgres_dagster_yaml()
        conf.pop("compute_logs", None)
        os.environ.update(postgres_instance_env(cluster, "dagster", cfg.dagster_home, conf))
        instance_yaml = root / "dagster.yaml"
        instance_yaml.write_text((cfg.dagster_home / "dagster.yaml").read_text())
        os.environ.update(prepare_home(cfg, dagster_yaml=instance_yaml))
        for k in ("CV_ASSETS_LANDING", "CV_ASSETS_ARTIFACTS", "CV_ASSETS_PROFILE"):
            os.environ.pop(k, None)
        landing = Path(cfg.landing_root)
        (seed_batch,) = write_batches(root / "seed", 1, 1, seed=13, size=64)
        ids = [f"lot-{i:05d}" for i in range(n)]
        marker = json.loads((seed_batch.path / "batch.json").read_text())
        for bid in ids:
            shutil.copytree(seed_batch.path, landing / bid)
            (landing / bid / "batch.json").write_text(json.dumps(marker | {"batch_id": bid}))
        instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
        storage = type(instance.run_storage).__name__
        assert storage == "PostgresRunStorage", storage
        instance.add_dynamic_partitions(BATCHES, ids)
        cursor = LandingCursor(watermark=time.time_ns()).dumps()
        resources = platform_resources(cfg)
        times = []
        for k in range(3):
            new = write_batches(landing, 1, 4, seed=100 + k, size=320, prefix="fresh")[0]
            t0 = time.perf_counter()
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=resources
            ) as ctx:
                result = landing_sensor(ctx)
            times.append(time.perf_counter() - t0)
            assert isinstance(result, dg.SensorResult)
            assert [r.partition_key for r in result.run_requests or []] == [new.batch_id]
            instance.add_dynamic_partitions(BATCHES, [new.batch_id])
            cursor = result.cursor
        (known,) = cluster.query("dagster", "SELECT count(*) FROM dynamic_partitions")[0]
        assert known == n + 3, known
        instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.stop()
    t = statistics.median(times)
    return Result(
        "landing_sensor_tick_10k_postgres",
        6,
        f"one landing_sensor tick with {n:,} landed batches (+1 new), PostgreSQL instance "
        "(local server, fsync on)",
        t,
        "s",
        "<= 2 s",
        t <= 2.0,
        f"ticks: {', '.join(f'{x:.2f}' for x in times)} s; {known:,} partitions in Postgres",
    )


BENCHMARKS = [sensor_tick_postgres]
