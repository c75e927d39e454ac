"""Training as an external process (issue 20): what Pipes costs, and what a kill costs."""

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_intake import QUIET, _fresh, _home
from benchmarks.common import QUICK, Result
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.synth.batches import write_batches


@dataclass
class Prepared:
    """A home with landed, validated batches and a dataset snapshot, ready to train."""

    root: Path
    cfg: PlatformConfig
    instance: Any  # dg.DagsterInstance
    job: Any  # the implicit asset job
    dataset: Any  # the training_dataset record (TrainingDataset)


def prepared_home(name: str, batches: int, per: int, size: int = 320, seed: int = 21) -> Prepared:
    import dagster as dg

    from cv_assets.definitions import build_defs
    from cv_assets.defs.ingest.partitions import BATCHES
    from cv_assets.lib.tracking import runs as tracking

    root = _fresh(name)
    cfg = _home(root)
    landed = write_batches(Path(cfg.landing_root), batches, per, seed=seed, size=size)
    ids = [b.batch_id for b in landed]
    instance = dg.DagsterInstance.from_config(str(cfg.dagster_home))
    instance.add_dynamic_partitions(BATCHES, ids)
    defs = build_defs(cfg)
    for b in ids:
        defs.resolve_job_def("intake_job").execute_in_process(
            partition_key=b, instance=instance, run_config=QUIET
        )
    job = defs.resolve_implicit_global_asset_job_def()
    job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey("training_dataset")]
    )
    rec = json.loads((Path(cfg.artifacts_root) / "records/training_dataset/_all.json").read_text())
    # Steady state: a platform's MLflow database exists after its first run. Creating it (schema
    # migrations, 2-4 s) is a one-time cost of a new home, not of a training.
    tracking.experiment_id(
        tracking.client(cfg.mlflow_tracking_uri), artifact_location=cfg.mlflow_artifact_root
    )
    return Prepared(root, cfg, instance, job, rec)


def _yolo_model(p: Prepared, train_cfg: dict[str, Any]) -> tuple[float, Any]:
    import dagster as dg

    run_config = QUIET | {"ops": {"yolo_model": {"config": train_cfg}}}
    t0 = time.perf_counter()
    r = p.job.execute_in_process(
        instance=p.instance, run_config=run_config, asset_selection=[dg.AssetKey("yolo_model")]
    )
    assert r.success
    return time.perf_counter() - t0, r


def _settings() -> tuple[int, int, int, int]:
    """batches, images per batch, epochs, imgsz."""
    return (2, 40, 4, 96) if QUICK else (4, 100, 12, 160)


def pipes_overhead() -> Result:
    """yolo_model (its training in a Pipes worker process) vs the same training in process."""
    from cv_assets.lib.core.store import ArtifactStore
    from cv_assets.lib.tracking import runs as tracking
    from cv_assets.lib.training.train import train_and_record
    from cv_assets.lib.training.yolo import TrainParams

    batches, per, epochs, imgsz = _settings()
    p = prepared_home("pipes_overhead", batches, per)
    params = TrainParams(epochs=epochs, imgsz=imgsz, batch=32, device="cpu")
    store = ArtifactStore(p.cfg.artifacts_root)
    client = tracking.client(p.cfg.mlflow_tracking_uri)
    # Warm both sides alike (page cache, kernels); then in process, then through the asset.
    train_and_record(store, p.dataset, TrainParams(epochs=1, imgsz=imgsz, batch=32), client)
    t0 = time.perf_counter()
    train_and_record(store, p.dataset, params, client, force=True)
    direct = time.perf_counter() - t0
    cfg = {"epochs": epochs, "imgsz": imgsz, "batch": 32, "device": "cpu", "force": True}
    piped, _ = _yolo_model(p, cfg)
    p.instance.dispose()
    ratio = piped / direct
    return Result(
        "train_pipes_overhead",
        20,
        f"yolo_model (training in a Dagster Pipes worker process) vs the same training called in "
        f"process ({batches * per} images, {epochs} epochs, imgsz {imgsz})",
        ratio,
        "x",
        "<= 1.05x",
        ratio <= 1.05,
        f"in process {direct:.1f} s (MLflow, checkpoints, weights to the store); through Pipes "
        f"{piped:.1f} s (run start, worker start, the same training, its record back)",
    )


def _kill_worker_after(p: Prepared, epoch: int, killed: list[int]) -> None:
    """SIGKILL this process's training worker once its checkpoint of ``epoch`` is stored."""
    from cv_assets.lib.core.store import ArtifactStore
    from cv_assets.lib.training.checkpoints import newest_epoch

    store, me = ArtifactStore(p.cfg.artifacts_root), os.getpid()
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        keys = [k for k in store.list("training/checkpoints/") if k.endswith(".json")]
        if keys and newest_epoch(store, keys[0].split("/")[2]) >= epoch:
            for cmd in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    stat = (cmd.parent / "stat").read_text().rsplit(")", 1)[1].split()
                    if b"cv_assets.training_worker" in cmd.read_bytes() and int(stat[1]) == me:
                        os.kill(int(cmd.parent.name), signal.SIGKILL)
                        killed.append(epoch)
                except (OSError, ValueError):
                    continue
            return
        time.sleep(0.05)


def resume_overhead() -> Result:
    """A training killed after half its epochs and resumed, vs the same training uninterrupted."""
    batches, per, epochs, imgsz = _settings()
    p = prepared_home("resume_overhead", batches, per)
    cfg = {"epochs": epochs, "imgsz": imgsz, "batch": 32, "device": "cpu", "force": True}
    _yolo_model(p, cfg | {"epochs": 1})  # warm
    whole, _ = _yolo_model(p, cfg)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_worker_after, args=(p, epochs // 2, killed))
    killer.start()
    resumed, r = _yolo_model(p, cfg)
    killer.join(timeout=10)
    assert killed, "the training finished before it was killed"
    meta = r.asset_materializations_for_node("yolo_model")[0].metadata
    after = meta["resumed_after_epoch"].value
    p.instance.dispose()
    ratio = resumed / whole
    return Result(
        "train_resume_overhead",
        20,
        f"wall time of a yolo_model whose training worker is SIGKILLed after epoch "
        f"{epochs // 2} of {epochs} and resumed on the step's retry, vs uninterrupted "
        f"({batches * per} images, imgsz {imgsz})",
        ratio,
        "x",
        "<= 1.1x",
        ratio <= 1.1,
        f"uninterrupted {whole:.1f} s; killed and resumed after epoch {after}: {resumed:.1f} s "
        "(the retry's 1 s wait, a second worker start and the checkpoint's download included)",
    )


BENCHMARKS = [pipes_overhead, resume_overhead]
