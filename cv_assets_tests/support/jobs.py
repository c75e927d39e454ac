"""Dagster jobs run in process on a real instance, and what their results report."""

from typing import Any

import dagster as dg

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets_tests.support.landing import land

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A training small enough for 2 cores: 2 epochs at imgsz 64.
TINY = {"epochs": 2, "imgsz": 64, "batch": 16, "min_train_images": 8}


def run_intake(
    cfg: PlatformConfig,
    instance: dg.DagsterInstance,
    batch_id: str,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """``intake_job`` on one landed batch, its partition added first."""
    instance.add_dynamic_partitions(BATCHES, [batch_id])
    job = build_defs(cfg).resolve_job_def("intake_job")
    return job.execute_in_process(
        partition_key=batch_id,
        instance=instance,
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


def ingest(cfg, instance, expect_ok: bool = True, **land_kw) -> list[str]:
    """Lands synthetic batches (``land``'s arguments) and runs intake on each; their ids."""
    batches = land(cfg, **land_kw)
    ids = [b.batch_id for b in batches]
    instance.add_dynamic_partitions(BATCHES, ids)
    job = build_defs(cfg).resolve_job_def("intake_job")
    for b in ids:
        r = job.execute_in_process(
            partition_key=b, instance=instance, run_config=QUIET, raise_on_error=False
        )
        assert r.success == expect_ok
    return ids


def train(
    cfg,
    instance,
    train: dict[str, Any] | None = None,
    min_map50: float = 0.0,
    mobile: dict[str, Any] | None = None,
    job: str = "training_job",
    raise_on_error: bool = False,
    defs=None,
):
    """A ``TINY`` training job (``train`` overrides it) with a gate every model passes."""
    rc = QUIET | {
        "ops": {
            "yolo_model": {"config": TINY | (train or {})},
            "model_evaluation": {"config": {"min_map50": min_map50}},
            "mobile_model": {"config": mobile or {}},
        }
    }
    d = defs or build_defs(cfg)
    return d.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=rc, raise_on_error=raise_on_error
    )


def check_named(result, name: str):
    """The evaluation of the asset check ``name`` in a run's result."""
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == name)


def materialized(result, asset: str) -> dict[str, Any] | None:
    """The metadata values of ``asset``'s materialization in a run's result; None if absent."""
    for m in result.get_asset_materialization_events():
        if m.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in m.materialization.metadata.items()}
    return None
