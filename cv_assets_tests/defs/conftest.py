"""Fixtures for real (tiny) trainings and exports: a home with intake done, run helpers."""

from typing import Any

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets_tests.conftest import land

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
TINY = {"epochs": 2, "imgsz": 64, "batch": 16, "min_train_images": 8}


def ingest(cfg, instance, expect_ok: bool = True, **land_kw) -> list[str]:
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
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == name)


def materialized(result, asset: str) -> dict[str, Any] | None:
    for m in result.get_asset_materialization_events():
        if m.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in m.materialization.metadata.items()}
    return None


@pytest.fixture
def small_home(cfg, instance):
    """Two intaken batches of 24 small images: enough for a 2-epoch training at imgsz 64."""
    ingest(cfg, instance, batches=2, images=24, size=96)
    return cfg
