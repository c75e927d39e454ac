"""review_queue on a real instance: labels that agree with the champion are left alone; a class
changed or a box left out on purpose is queued, ranked, with a crop, for exactly those images.

A champion trained for two epochs at imgsz 64 sees little, so the batch is labelled with what it
does see (its own detections, through the same ONNX file) and then corrupted: whatever the
champion's quality, the queue must then find the corruptions and nothing else.
"""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets_tests.support.jobs import QUIET, train
from cv_assets_tests.support.landing import land
from cv_assets_tests.support.review import land_corrupted_batch, materialize_queue, review_job


@pytest.mark.slow
def test_queue_finds_the_planted_label_errors_and_nothing_else(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success
    plan = land_corrupted_batch(cfg, instance)
    md = materialize_queue(cfg, instance, plan.batch_id, plan.conf_min)
    table = pd.read_parquet(str(md["table"]))
    emptied, n_emptied = plan.emptied
    stem, line, labelled, seen = plan.mismatch
    # Exactly the planted errors: one class_mismatch, one missing_label per box left out.
    assert md["class_mismatch"] == 1 and md["missing_label"] == n_emptied
    assert md["low_iou"] == md["extra_label"] == 0 and md["flagged_images"] == 2
    # The champion's boxes from conf_min were the labels: that is where it is confident.
    assert md["conf_min"] == pytest.approx(plan.conf_min)
    assert md["items"] == len(table) == 1 + n_emptied and md["champion_version"] == "1"
    assert md["dagster/row_count"] == len(table)
    assert [c.name for c in md["dagster/column_schema"].columns] == list(table.columns)
    assert set(table["stem"]) == {stem, emptied} and not set(table["stem"]) & set(plan.clean)
    (mm,) = pd.DataFrame(table[table["kind"] == "class_mismatch"]).to_dict("records")
    got = (mm["stem"], mm["label_line"], mm["label_class"], mm["pred_class"])
    assert got == (stem, line, labelled, seen)
    assert mm["iou"] > 0.99 and labelled in mm["details"] and seen in mm["details"]
    assert set(table.loc[table["stem"] == emptied, "kind"]) == {"missing_label"}
    # Ranked: ranks 1..n, most severe first; a crop per item under the batch's review prefix.
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["score"].is_monotonic_decreasing
    prefix = Path(cfg.artifacts_root) / "review" / plan.batch_id / "v1"
    assert Path(str(md["table"])) == prefix / "queue.parquet"
    for r in table.to_dict("records"):
        crop = Path(str(r["crop_uri"]))
        assert crop == prefix / "crops" / f"{r['rank']}_{r['stem']}.png"
        assert Image.open(crop).size == (128, 128)
    top = str(md["top_items"])
    assert top.count("data:image/png;base64,") == min(10, len(table)) and "class_mismatch" in top


@pytest.mark.asset
def test_queue_without_a_champion_says_what_to_do_first(cfg, instance):
    (s,) = land(cfg, batches=1, images=6, size=96)
    instance.add_dynamic_partitions(BATCHES, [s.batch_id])
    intake = build_defs(cfg).resolve_job_def("intake_job")
    assert intake.execute_in_process(partition_key=s.batch_id, instance=instance).success
    r = review_job(cfg).execute_in_process(
        partition_key=s.batch_id, instance=instance, run_config=QUIET, raise_on_error=False
    )
    failure = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE")
    assert "champion_model has not been materialized yet" in str(failure.event_specific_data)
