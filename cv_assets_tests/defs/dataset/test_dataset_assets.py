"""training_dataset on a real instance: the snapshot's table and version, as the UI shows them."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.resources.io_manager import record_key
from cv_assets_tests.support.jobs import QUIET, ingest, materialized

pytestmark = pytest.mark.asset


def test_dataset_samples_table_carries_its_columns_row_count_and_version(cfg, instance):
    ingest(cfg, instance, batches=2, images=12, size=96)
    job = build_defs(cfg).resolve_job_def("training_job")
    result = job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey("training_dataset")]
    )
    assert result.success
    md = materialized(result, "training_dataset")
    assert md is not None
    mat = instance.get_latest_materialization_event(dg.AssetKey("training_dataset"))
    assert mat is not None and mat.asset_materialization is not None
    # The record the IO manager stored (what training reads) names the table.
    record = json.loads(
        (Path(cfg.artifacts_root) / record_key("training_dataset", None)).read_text()
    )
    samples = pd.read_parquet(record["samples"]["uri"])
    assert record["samples"]["sha256"] == md["samples_sha256"]
    assert [c.name for c in md["dagster/column_schema"].columns] == list(samples.columns)
    assert md["dagster/row_count"] == len(samples) == md["images"] == 24
    # The data version is the dataset version, so everything trained on it knows when it is stale.
    assert mat.asset_materialization.tags["dagster/data_version"] == md["dataset_version"]
