"""The deployment's storage, for real: Dagster on PostgreSQL, files in S3, an MLflow server.

Intake of two landed batches and a tiny training with export run through the same jobs as in
production, configured only by the environment. The proof is read back from the services
themselves: rows in Postgres, objects in the bucket, the version in MLflow's registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cv_assets.cli.status import collect_status
from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets.lib.core.store import split_s3_uri
from cv_assets.lib.tracking import runs as tracking
from cv_assets.read_side import open_store
from cv_assets_tests.integration.cloud import (
    bucket_keys,
    cloud_platform,
    land_in_s3,
    verify_store,
)
from cv_assets_tests.support.jobs import QUIET, materialized, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ASSETS = {
    "raw_batch",
    "validated_batch",
    "batch_features",
    "training_dataset",
    "yolo_model",
    "model_evaluation",
    "mobile_model",
    "champion_model",
}


def test_intake_training_and_export_keep_runs_in_postgres_and_files_in_the_bucket(
    pg, pg_db, mlflow_server, s3_bucket, s3_endpoint, monkeypatch, tmp_path: Path
):
    db = pg_db("dagster")
    cfg, instance = cloud_platform(
        monkeypatch,
        tmp_path,
        pg=pg,
        db=db,
        bucket=s3_bucket,
        s3_endpoint=s3_endpoint,
        tracking_uri=mlflow_server.url,
    )
    assert cfg.profile == "cloud" and cfg.artifacts_root == f"{s3_bucket}/platform/artifacts"
    ids = land_in_s3(cfg.landing_root, s3_endpoint, tmp_path, batches=2, images=24, seed=3)
    instance.add_dynamic_partitions(BATCHES, ids)
    defs = build_defs(cfg)
    intake = defs.resolve_job_def("intake_job")
    run_ids = []
    for b in ids:
        r = intake.execute_in_process(partition_key=b, instance=instance, run_config=QUIET)
        assert r.success
        run_ids.append(r.run_id)
    result = train(cfg, instance, train={"epochs": 1}, defs=defs)
    assert result.success
    run_ids.append(result.run_id)
    model = materialized(result, "yolo_model")
    mobile = materialized(result, "mobile_model")
    assert model is not None and mobile is not None

    # Postgres holds the runs and their events (read with SQL, not through Dagster).
    runs = dict(pg.query(db, "SELECT run_id, status FROM runs"))
    assert runs == dict.fromkeys(run_ids, "SUCCESS")
    (n_events,) = pg.query(db, "SELECT count(*) FROM event_logs")[0]
    assert n_events > 50
    rows = pg.query(
        db,
        "SELECT DISTINCT asset_key FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
    )
    assert {json.loads(k)[0] for (k,) in rows} == ASSETS
    partitions = pg.query(db, 'SELECT "partition" FROM dynamic_partitions ORDER BY 1')
    assert [p for (p,) in partitions] == sorted(ids)
    # The instance on disk holds no run storage of its own: no SQLite files anywhere in the home.
    assert not list(cfg.home.rglob("*.db")) and not list(cfg.home.rglob("*.sqlite"))

    # The bucket holds the landing zone, the artifacts and MLflow's run artifacts.
    bucket = split_s3_uri(s3_bucket)[0]
    keys = bucket_keys(s3_bucket, s3_endpoint)
    art = "platform/artifacts/"

    def under(prefix: str) -> list[str]:
        return [k for k in keys if k.startswith(prefix)]

    assert len(under("platform/landing/")) >= 2 * 24 * 2
    assert under(f"{art}raw/{ids[0]}/files/images/") and under(f"{art}std/{ids[1]}/images/")
    dataset_version = str(model["dataset_version"])
    assert f"{art}datasets/{dataset_version}/data.yaml" in keys
    weights_uri = str(model["weights"])
    assert weights_uri.startswith(f"s3://{bucket}/{art}models/") and weights_uri.endswith("best.pt")
    assert weights_uri.removeprefix(f"s3://{bucket}/") in keys
    mobile_files = {Path(k).name for k in under(f"{art}mobile/")}
    assert {"model.onnx", "model.int8.onnx", "model.ort", "MODEL_CARD.md"} <= mobile_files
    run_id = str(model["mlflow_run_id"])
    mlflow_keys = under("mlflow/")
    assert any(f"/{run_id}/artifacts/weights/best.pt" in k for k in mlflow_keys), mlflow_keys[:20]

    # MLflow, through its server: the run, its artifacts in the bucket, the registered champion.
    c = tracking.client(mlflow_server.url)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith(f"s3://{bucket}/mlflow/")
    champ = c.get_model_version_by_alias(tracking.MODEL_NAME, "champion")
    assert str(champ.version) == "1" and champ.run_id == run_id
    assert champ.tags["weights_uri"] == weights_uri
    assert champ.tags["weights_sha256"] == model["weights_sha256"]
    # ... and MLflow's own tables are in Postgres too.
    assert pg.query(mlflow_server.db, "SELECT count(*) FROM model_versions")[0][0] == 1
    assert pg.query(mlflow_server.db, "SELECT status FROM runs WHERE run_uuid = %s", (run_id,)) == [
        ("FINISHED",)
    ]

    # What users read: status from the same environment, every recorded hash true.
    status = collect_status(cfg)
    assert status["champion"]["version"] == "1"
    assert status["champion"]["onnx_uri"].startswith(f"s3://{bucket}/platform/artifacts/mobile/")
    assert status["batches"]["landed"] == 2
    checked = verify_store(open_store(cfg))
    assert checked.raw_files == 2 * 24 * 2 and checked.labels == checked.images == 2 * 24
    onnx = {status["champion"][k] for k in ("onnx_uri", "onnx_int8_uri", "ort_uri")}
    assert {weights_uri, *onnx} <= checked.refs, sorted(checked.refs)
    assert any(u.endswith(f"datasets/{dataset_version}/samples.parquet") for u in checked.refs)
    instance.dispose()
