"""Intake benchmarks (issue 2): decode cost, incremental cost, sensor tick, peak memory."""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks.common import QUICK, WORK, Result, timed
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.images import ImageLimits
from cv_assets.lib.ingest.intake import IngestResult, ingest_batch
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.ingest.raw import copy_raw_batch, load_raw_manifest
from cv_assets.lib.synth.batches import CLASSES, write_batches

# Dagster's console logger at DEBUG would print every event of every run.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _fresh(name: str) -> Path:
    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _home(root: Path) -> PlatformConfig:
    """A real embedded-default home (instance configured by the repo's dagster.yaml)."""
    from cv_assets.dev.home import prepare_home

    env = {"CV_ASSETS_HOME": str(root / "home")}
    cfg = PlatformConfig.from_env(env)
    os.environ.update(prepare_home(cfg))
    for k in ("CV_ASSETS_LANDING", "CV_ASSETS_ARTIFACTS"):
        os.environ.pop(k, None)
    return cfg


def ingest_runner(store: ArtifactStore, rec: Any, manifest: Any) -> Callable[[], IngestResult]:
    """One full intake of a raw copy (``rec``), into a fresh prefix each call."""

    def run() -> IngestResult:
        out = f"std/{time.perf_counter_ns()}"
        return ingest_batch(
            manifest.batch_id,
            manifest,
            read=lambda rel: store.get_bytes(f"{rec['files_key']}/{rel}"),
            write=lambda key, data: store.put_bytes(f"{out}/{key}", data).uri,
            link=lambda rel, key: store.copy(f"{rec['files_key']}/{rel}", f"{out}/{key}"),
            seen={},
            classes=CLASSES,
            limits=ImageLimits(),
        )

    return run


def ingest_vs_decode() -> Result:
    n = 60 if QUICK else 300
    root = _fresh("ingest_vs_decode")
    (s,) = write_batches(root / "landing", 1, n, seed=11, size=640)
    store = ArtifactStore(str(root / "artifacts"))
    rec = copy_raw_batch(LandingZone(str(root / "landing")), store, s.batch_id, CLASSES)
    manifest = load_raw_manifest(store, s.batch_id)
    assert manifest is not None
    files = sorted((root / "artifacts" / rec["files_key"] / "images").iterdir())

    def bare() -> None:
        for f in files:
            with Image.open(f) as im:
                im.load()

    run = ingest_runner(store, rec, manifest)

    def ingest() -> None:
        assert run().accepted == n

    bare()  # warm the page cache and imports for both sides
    ingest()
    b, i = [], []
    for _ in range(5):  # interleaved, so drift in machine load hits both sides alike
        b.append(timed(bare, 1))
        i.append(timed(ingest, 1))
    tb, ti = statistics.median(b), statistics.median(i)
    ratio = ti / tb
    return Result(
        "ingest_vs_bare_decode",
        2,
        f"ingest (decode, validate, standardise, features) vs bare PIL decode, {n} 640px JPEGs",
        ratio,
        "x",
        "<= 1.3x",
        ratio <= 1.3,
        f"bare decode {tb / n * 1e3:.2f} ms/img, ingest {ti / n * 1e3:.2f} ms/img (median of 5)",
    )


def incremental_ingest() -> Result:
    """Batch 101 vs batch 11, each through the real Dagster job on a real instance."""
    import dagster as dg

    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES

    early, late, probes, per = (4, 20, 3, 8) if QUICK else (10, 100, 5, 16)
    root = _fresh("incremental_ingest")
    cfg = _home(root)
    batches = write_batches(Path(cfg.landing_root), late + probes, per, seed=12, size=640)
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    job = build_defs(cfg).resolve_job_def("intake_job")
    instance.add_dynamic_partitions(BATCHES, [b.batch_id for b in batches])
    times: dict[int, float] = {}

    def run(i: int) -> None:
        t0 = time.perf_counter()
        r = job.execute_in_process(
            partition_key=batches[i].batch_id, instance=instance, run_config=QUIET
        )
        assert r.success
        times[i] = time.perf_counter() - t0

    for i in range(early):
        run(i)
    # The probes at "batch 11": then continue to 100 and probe "batch 101".
    early_probe = list(range(early, early + probes))
    for i in early_probe:
        run(i)
    for i in range(early + probes, late + probes):
        run(i)
    late_probe = list(range(late, late + probes))
    t_early = statistics.median(times[i] for i in early_probe)
    t_late = statistics.median(times[i] for i in late_probe)
    instance.dispose()
    ratio = t_late / t_early
    return Result(
        "ingest_batch_101_vs_11",
        2,
        f"intake run of batch {late + 1} vs batch {early + 1} ({per} imgs each, real instance)",
        ratio,
        "x",
        "<= 1.2x",
        ratio <= 1.2,
        f"batch {early + 1}: {t_early:.2f} s, batch {late + 1}: {t_late:.2f} s "
        f"(median of {probes} consecutive batches)",
    )


def land_and_tick(instance, cfg: PlatformConfig, root: Path, n: int) -> list[float]:
    """``n`` known batches in the landing zone and the partition set, then three timed ticks of
    ``landing_sensor``, each with one new batch to find; returns the tick times."""
    import dagster as dg

    from cv_assets.defs.ingest.partitions import BATCHES
    from cv_assets.defs.ingest.sensors import landing_sensor
    from cv_assets.lib.ingest.tick import LandingCursor
    from cv_assets.resources.environment import platform_resources

    landing = Path(cfg.landing_root)
    (seed_batch,) = write_batches(root / "seed", 1, 1, seed=13, size=64)
    ids = [f"lot-{i:05d}" for i in range(n)]
    marker = json.loads((seed_batch.path / "batch.json").read_text())
    for bid in ids:
        shutil.copytree(seed_batch.path, landing / bid)
        (landing / bid / "batch.json").write_text(json.dumps(marker | {"batch_id": bid}))
    instance.add_dynamic_partitions(BATCHES, ids)
    cursor = LandingCursor(watermark=time.time_ns()).dumps()
    resources, sensor = platform_resources(cfg), landing_sensor(cfg)
    times = []
    for k in range(3):
        new = write_batches(landing, 1, 4, seed=100 + k, size=320, prefix="fresh")[0]
        t0 = time.perf_counter()
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as ctx:
            result = sensor(ctx)
        times.append(time.perf_counter() - t0)
        assert isinstance(result, dg.SensorResult)
        assert [r.partition_key for r in result.run_requests or []] == [new.batch_id]
        instance.add_dynamic_partitions(BATCHES, [new.batch_id])
        cursor = result.cursor
    return times


def sensor_tick() -> Result:
    import dagster as dg

    n = 2000 if QUICK else 10_000
    root = _fresh("sensor_tick")
    cfg = _home(root)
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    times = land_and_tick(instance, cfg, root, n)
    instance.dispose()
    t = statistics.median(times)
    return Result(
        "landing_sensor_tick_10k",
        2,
        f"one landing_sensor tick with {n:,} landed batches (+1 new), SQLite instance",
        t,
        "s",
        "<= 2 s",
        t <= 2.0,
        f"ticks: {', '.join(f'{x:.2f}' for x in times)} s",
    )


def _memory_child(root: str, batch_id: str) -> None:
    """Runs in a subprocess: intake of one big batch, then report peak RSS."""
    import dagster as dg

    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES

    cfg = PlatformConfig.from_env()
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    job = build_defs(cfg).resolve_job_def("intake_job")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    instance.add_dynamic_partitions(BATCHES, [batch_id])
    r = job.execute_in_process(partition_key=batch_id, instance=instance, run_config=QUIET)
    assert r.success
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kib": base, "peak_kib": peak}))


def validate_memory() -> Result:
    n = 500 if QUICK else 5000
    root = _fresh("validate_memory")
    cfg = _home(root)
    (s,) = write_batches(Path(cfg.landing_root), 1, n, seed=14, size=640)
    code = (
        "import sys; from benchmarks.bench_intake import _memory_child; "
        "_memory_child(sys.argv[1], sys.argv[2])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), s.batch_id],
        env=os.environ,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    d = json.loads(out.stdout.strip().splitlines()[-1])
    peak = d["peak_kib"] / 1024
    return Result(
        "validate_5000_peak_memory",
        2,
        f"peak RSS of the intake run for one batch of {n:,} 640x640 images",
        peak,
        "MiB",
        "< 1024 MiB",
        peak < 1024,
        f"process RSS before the run {d['base_kib'] / 1024:.0f} MiB (imports), peak {peak:.0f} MiB",
    )


BENCHMARKS = [ingest_vs_decode, incremental_ingest, sensor_tick, validate_memory]


def train_champion(
    work: str, batches: int, images: int, seed: int, train: dict[str, Any]
) -> PlatformConfig:
    """A real champion in a fresh home under ``work``: synthetic batches through intake, then
    ``training_job`` with a gate every model passes (the full path: export and file checks)."""
    import dagster as dg

    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES

    cfg = _home(_fresh(work))
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    defs = build_defs(cfg)
    landed = write_batches(Path(cfg.landing_root), batches, images, seed=seed, size=320)
    instance.add_dynamic_partitions(BATCHES, [b.batch_id for b in landed])
    intake = defs.resolve_job_def("intake_job")
    for b in landed:
        r = intake.execute_in_process(partition_key=b.batch_id, instance=instance, run_config=QUIET)
        assert r.success
    rc = QUIET | {
        "ops": {
            "yolo_model": {"config": train},
            "model_evaluation": {"config": {"min_map50": 0.0}},
        }
    }
    r = defs.resolve_job_def("training_job").execute_in_process(instance=instance, run_config=rc)
    assert r.success
    instance.dispose()
    return cfg
