"""The landing sensor's tick on the deployment's storage (issue 6): Dagster on PostgreSQL.

The same measurement as ``bench_intake.sensor_tick`` (one tick with 10,000 known batches and one
new one), with the instance read from a real PostgreSQL server on 127.0.0.1 instead of SQLite:
a throwaway cluster started from Debian's binaries (``.ci/services.sh``), durable settings
(fsync on) as a deployment would run it.
"""

import os
import statistics

from benchmarks.bench_intake import _fresh, land_and_tick
from benchmarks.common import QUICK, Result
from cv_assets.lib.core.settings import PlatformConfig


def sensor_tick_postgres() -> Result:
    import dagster as dg

    from cv_assets.dev.home import prepare_home
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
        instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
        storage = type(instance.run_storage).__name__
        assert storage == "PostgresRunStorage", storage
        times = land_and_tick(instance, cfg, root, n)
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
