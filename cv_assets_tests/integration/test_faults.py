"""Faults of the deployment's services: a flaky S3 endpoint, PostgreSQL restarting mid-run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.lib.core.store import ArtifactStore
from cv_assets_tests.integration.cloud import cloud_platform, land_in_s3, verify_store
from cv_assets_tests.integration.flaky import FlakyProxy
from cv_assets_tests.integration.pg import wait_until_accepting
from cv_assets_tests.support.jobs import QUIET, TINY, materialized

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def snapshot_and_train(defs, instance) -> dg.ExecuteInProcessResult:
    """training_job's first two steps (dataset snapshot, 1 epoch at imgsz 64): the S3 reads and
    writes of a training, without the evaluation and export that test_postgres_s3 covers."""
    tiny = TINY | {"epochs": 1, "min_val_images": 1, "min_test_images": 1}
    rc = QUIET | {"ops": {"yolo_model": {"config": tiny}}}
    return defs.resolve_job_def("training_job").execute_in_process(
        instance=instance,
        run_config=rc,
        asset_selection=[dg.AssetKey("training_dataset"), dg.AssetKey("yolo_model")],
        raise_on_error=False,
    )


def test_flaky_s3_endpoint_retries_complete_the_runs_and_nothing_is_half_written(
    pg, pg_db, s3_bucket, s3_endpoint, monkeypatch, tmp_path: Path
):
    with FlakyProxy(s3_endpoint, fail_rate=0.3, seed=20261126) as proxy:
        cfg, instance = cloud_platform(
            monkeypatch,
            tmp_path,
            pg=pg,
            db=pg_db("dagster_flaky"),
            bucket=s3_bucket,
            s3_endpoint=s3_endpoint,
            platform_endpoint=proxy.url,
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        # Few requests: each failure costs the client a backoff of about half a second.
        ids = land_in_s3(cfg.landing_root, s3_endpoint, tmp_path, batches=1, images=16, seed=5)
        instance.add_dynamic_partitions(BATCHES, ids)
        defs = build_defs(cfg)
        intake = defs.resolve_job_def("intake_job")
        for b in ids:
            r = intake.execute_in_process(partition_key=b, instance=instance, run_config=QUIET)
            assert r.success
        result = snapshot_and_train(defs, instance)
        assert result.success
        instance.dispose()
    # The network really was bad: about 30% of the platform's requests failed, of every kind.
    assert proxy.requests > 120, proxy.requests
    assert 0.2 <= proxy.failed / proxy.requests <= 0.4, (proxy.requests, dict(proxy.faults))
    assert min(proxy.faults[f] for f in ("error", "drop", "lost_answer")) >= 5, proxy.faults
    # Everything the runs recorded is there, whole, read back without the proxy.
    store = ArtifactStore(cfg.artifacts_root, s3_endpoint_url=s3_endpoint)
    checked = verify_store(store)
    assert checked.raw_files == 16 * 2 and checked.labels == checked.images == 16
    model = materialized(result, "yolo_model")
    dataset = materialized(result, "training_dataset")
    assert model is not None and dataset is not None
    assert str(model["weights"]) in checked.refs
    assert any(u.endswith(f"/{dataset['dataset_version']}/samples.parquet") for u in checked.refs)


def _restart_when_step_starts(pg, db: str, step: str, done: dict, timeout: float = 300) -> None:
    """Waits (in SQL) until ``step`` of a running run has started, then restarts the server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = pg.query(
            db,
            "SELECT e.run_id FROM event_logs e JOIN runs r ON r.run_id = e.run_id "
            "WHERE e.dagster_event_type = 'STEP_START' AND e.step_key = %s "
            "AND r.status = 'STARTED'",
            (step,),
        )
        if rows:
            time.sleep(1.0)  # inside the step: training has begun
            done["before"] = time.time()
            pg.restart()
            done["after"] = time.time()
            return
        time.sleep(0.2)


def test_postgres_restart_during_a_training_run_leaves_a_consistent_instance(
    pg, pg_db, s3_bucket, s3_endpoint, monkeypatch, tmp_path: Path
):
    db = pg_db("dagster_restart")
    cfg, instance = cloud_platform(
        monkeypatch,
        tmp_path,
        pg=pg,
        db=db,
        bucket=s3_bucket,
        s3_endpoint=s3_endpoint,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    ids = land_in_s3(cfg.landing_root, s3_endpoint, tmp_path, batches=3, images=24, seed=8)
    instance.add_dynamic_partitions(BATCHES, ids)
    defs = build_defs(cfg)
    intake = defs.resolve_job_def("intake_job")
    for b in ids[:2]:
        r = intake.execute_in_process(partition_key=b, instance=instance, run_config=QUIET)
        assert r.success

    restarted: dict[str, float] = {}
    t = threading.Thread(
        target=_restart_when_step_starts, args=(pg, db, "yolo_model", restarted), daemon=True
    )
    t.start()
    crash = ""
    try:
        snapshot_and_train(defs, instance)
    except Exception as e:  # the process may see the failure; what the instance holds is judged
        crash = f"training raised {type(e).__name__}: {e}"
    t.join(timeout=120)
    assert "after" in restarted, "the restart never happened"
    wait_until_accepting(pg)

    # The restart happened while the run was executing.
    (run,) = instance.get_runs(filters=dg.RunsFilter(job_name="training_job"))
    record = instance.get_run_record_by_id(run.run_id)
    assert record is not None and record.start_time is not None and record.end_time is not None
    assert record.start_time < restarted["before"] < record.end_time
    (started,) = pg.query(db, "SELECT extract(epoch FROM pg_postmaster_start_time())")[0]
    assert record.start_time < float(started) < record.end_time  # the server itself says so
    # The run ended in a terminal state, recorded in Postgres; a failure says so in its events.
    status = record.dagster_run.status.value
    assert status in TERMINAL, crash
    assert pg.query(db, "SELECT status FROM runs WHERE run_id = %s", (run.run_id,)) == [(status,)]
    events = {e.dagster_event_type for e in instance.all_logs(run.run_id) if e.is_dagster_event}
    if status == "SUCCESS":
        assert dg.DagsterEventType.RUN_SUCCESS in events
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in events
    else:
        assert dg.DagsterEventType.RUN_FAILURE in events, crash
    # No run is left looking alive, and the instance answers.
    stuck = pg.query(db, "SELECT run_id FROM runs WHERE status NOT IN %s", (tuple(TERMINAL),))
    assert stuck == []
    assert len(instance.get_runs()) == 3
    # A new run, after the restart, succeeds and is stored.
    r = intake.execute_in_process(partition_key=ids[2], instance=instance, run_config=QUIET)
    assert r.success
    assert pg.query(db, "SELECT status FROM runs WHERE run_id = %s", (r.run_id,)) == [("SUCCESS",)]
    instance.dispose()
