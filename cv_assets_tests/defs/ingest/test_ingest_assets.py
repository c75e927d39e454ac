import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from cv_assets.lib.ingest.intake import QUARANTINE_COLUMNS, SAMPLE_COLUMNS
from cv_assets.read_side import metadata_of
from cv_assets_tests.support.jobs import run_intake
from cv_assets_tests.support.landing import EXPECTED_RULE, land

pytestmark = pytest.mark.asset


def metadata(result, asset) -> dict[str, Any]:
    (mat,) = [
        m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)
    ]
    return metadata_of(mat.materialization)


def test_corrupt_batch_is_validated_with_reasons_and_counts(cfg, instance):
    (s,) = land(cfg, images=30, seed=1, corrupt_fraction=0.5)
    result = run_intake(cfg, instance, s.batch_id)
    md = metadata(result, "validated_batch")
    assert md["landed"] == s.files_landed == md["accepted"] + md["quarantined"]
    assert md["quarantined"] == len(s.faults)
    q = pd.read_parquet(md["quarantine_table"])
    assert set(q["rule"]) == {EXPECTED_RULE[k] for k in s.faults.values()}
    top_rule = q["rule"].value_counts().index[0]
    assert f"| {top_rule} |" in md["top_reasons"]
    assert len(q) == md["quarantined"] and q["reason"].str.len().gt(10).all()
    samples = pd.read_parquet(md["samples"])
    assert len(samples) == md["accepted"]
    assert all(Path(u).is_file() for u in samples["image_uri"])
    feats = metadata(result, "batch_features")
    assert feats["rows"] == md["accepted"]
    raw = metadata(result, "raw_batch")
    assert raw["manifest_sha256"] == md["manifest_sha256"]


def test_acceptance_check_blocks_when_rate_is_below_threshold(cfg, instance):
    (s,) = land(cfg, images=20, seed=2, corrupt_fraction=0.5)
    cfg_run = {"ops": {"intake": {"config": {"min_acceptance_rate": 0.9}}}}
    result = run_intake(cfg, instance, s.batch_id, cfg_run, raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "acceptance_rate_ok" and not check.passed
    assert "below the threshold 90%" in (check.description or "")
    assert not result.success  # blocking: the run fails so nothing downstream consumes it


def test_acceptance_check_passes_on_a_clean_batch(cfg, instance):
    (s,) = land(cfg, images=8, seed=3)
    result = run_intake(cfg, instance, s.batch_id)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and metadata(result, "validated_batch")["accepted"] == 8


def test_materializing_the_same_batch_twice_reuses_the_raw_copy(cfg, instance):
    (s,) = land(cfg, images=6, seed=4)
    run_intake(cfg, instance, s.batch_id)
    second = run_intake(cfg, instance, s.batch_id)
    assert metadata(second, "raw_batch")["reused_existing_copy"] is True
    assert metadata(second, "validated_batch")["accepted"] == 6  # not duplicates of itself


def test_reused_batch_id_with_new_files_is_refused_and_raw_copy_is_untouched(cfg, instance):
    (s,) = land(cfg, images=4, seed=5)
    run_intake(cfg, instance, s.batch_id)
    manifest = Path(cfg.artifacts_root) / "raw" / s.batch_id / "manifest.json"
    before = manifest.read_bytes()
    label = sorted((s.path / "labels").iterdir())[0]
    label.write_text("2 0.5 0.5 0.5 0.5\n")
    result = run_intake(cfg, instance, s.batch_id, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "refused" in str(failure.event_specific_data) and "new batch id" in str(
        failure.event_specific_data
    )
    assert manifest.read_bytes() == before
    assert label.read_text() == "2 0.5 0.5 0.5 0.5\n"  # the landed files stay where they are


def test_records_passed_downstream_are_uris_and_hashes_not_pickles(cfg, instance):
    (s,) = land(cfg, images=4, seed=6)
    run_intake(cfg, instance, s.batch_id)
    rec = json.loads(
        (
            Path(cfg.artifacts_root) / "records" / "validated_batch" / f"{s.batch_id}.json"
        ).read_text()
    )
    assert rec["samples"]["uri"].endswith("samples.parquet") and len(rec["samples"]["sha256"]) == 64
    assert not list(Path(cfg.dagster_home).rglob("storage/validated_batch*"))


def test_written_tables_carry_their_columns_row_counts_and_data_versions(cfg, instance):
    (s,) = land(cfg, images=12, seed=7, corrupt_fraction=0.25)
    result = run_intake(cfg, instance, s.batch_id)
    md = metadata(result, "validated_batch")
    # The main table (samples) under Dagster's standard keys, the quarantine under its own.
    samples = pd.read_parquet(md["samples"])
    schema = {c.name: c.type for c in md["dagster/column_schema"].columns}
    assert list(schema) == list(samples.columns) == SAMPLE_COLUMNS
    assert schema["width"] == "int64" and schema["sha256"] == "string"
    assert md["dagster/row_count"] == len(samples) == md["accepted"] > 0
    quarantine = pd.read_parquet(md["quarantine_table"])
    assert [c.name for c in md["quarantine_column_schema"].columns] == QUARANTINE_COLUMNS
    assert md["quarantine_row_count"] == len(quarantine) == md["quarantined"] > 0
    feats = metadata(result, "batch_features")
    table = pd.read_parquet(feats["features"])
    assert [c.name for c in feats["dagster/column_schema"].columns] == list(table.columns)
    assert feats["dagster/row_count"] == len(table) == md["accepted"]
    # Each data version is the hash of the table it stands for: staleness in the UI is true.
    versions = {
        m.asset_key: m.materialization.tags["dagster/data_version"]
        for m in result.get_asset_materialization_events()
        if m.materialization.tags
    }
    assert versions[dg.AssetKey("validated_batch")] == md["samples_sha256"]
    assert versions[dg.AssetKey("batch_features")] == feats["features_sha256"]
    assert versions[dg.AssetKey("raw_batch")] == md["manifest_sha256"]


def test_no_single_file_can_fail_a_batch_each_is_quarantined_by_name(cfg, instance):
    """Each of these used to raise out of intake: the step failed three times, the batch was
    neither accepted nor quarantined, and nothing named the file."""
    import os

    from cv_assets.cli.status import collect_status
    from cv_assets_tests.support.landing import PNG_CHUNK_PAST_EOF, inflating, png_with_chunk

    (s,) = land(cfg, images=6, seed=20)
    images, labels = s.path / "images", s.path / "labels"
    hostile = {
        "ztxt_bomb.png": png_with_chunk(b"zTXt", b"Comment\0\0" + inflating(200 << 20)),
        "iccp_bomb.png": png_with_chunk(b"iCCP", b"icc\0\0" + inflating(200 << 20)),
        "chunk_past_eof.png": png_with_chunk(b"tEXt", b"")[:33] + PNG_CHUNK_PAST_EOF,
    }
    for name, data in hostile.items():
        (images / name).write_bytes(data)
        (labels / name.replace(".png", ".txt")).write_text("0 0.5 0.5 0.1 0.1\n")
    jpg = sorted(images.glob("*.jpg"))[0].read_bytes()
    with open(os.path.join(os.fsencode(images), b"\xff\xfe.jpg"), "wb") as f:
        f.write(jpg)  # a name that is not UTF-8, written with a bytes path
    (images / f"{'n' * 240}.jpg").write_bytes(jpg)

    result = run_intake(cfg, instance, s.batch_id)
    assert result.success
    md = metadata(result, "validated_batch")
    assert md["landed"] == 11 == md["accepted"] + md["quarantined"]
    assert md["accepted"] == 6 and md["quarantined"] == 5
    q = pd.read_parquet(md["quarantine_table"]).set_index("item")
    assert q.loc["images/ztxt_bomb.png", "rule"] == "metadata_bomb"
    assert q.loc["images/iccp_bomb.png", "rule"] == "metadata_bomb"
    assert q.loc["images/chunk_past_eof.png", "rule"] == "corrupt_image"
    assert q.loc["images/\\xff\\xfe.jpg", "rule"] == "undecodable_name"
    assert q.loc[f"images/{'n' * 240}.jpg", "rule"] == "name_too_long"
    for item, row in q.iterrows():  # each reason names its file (long names cut to 200)
        assert str(item)[:150] in row["reason"][:160], (item, row["reason"])
    assert "images/\\xff\\xfe.jpg" in md["quarantine_preview"]
    status = collect_status(cfg)["batches"]
    assert status["validated"] == 1 and status["images_quarantined"] == 5


def test_oversized_label_files_are_quarantined_quickly_with_their_limit(cfg, instance):
    (s,) = land(cfg, images=5, seed=21)
    labels = sorted((s.path / "labels").iterdir())
    line = b"0 0.5 0.5 0.1 0.1\n"
    labels[0].write_bytes(line * (50_000_000 // len(line)))  # 50 MB, 2.9 million boxes
    labels[1].write_bytes(line * 20_000)  # 360 KB, 20,000 boxes
    result = run_intake(cfg, instance, s.batch_id)
    md = metadata(result, "validated_batch")
    q = pd.read_parquet(md["quarantine_table"]).set_index("item")
    assert q.loc[f"images/{labels[0].stem}.jpg", "rule"] == "label_too_large"
    assert "(max_label_bytes); not parsed" in q.loc[f"images/{labels[0].stem}.jpg", "reason"]
    assert q.loc[f"images/{labels[1].stem}.jpg", "rule"] == "too_many_boxes"
    assert (
        f"labels/{labels[1].name}: 20,000 boxes" in q.loc[f"images/{labels[1].stem}.jpg", "reason"]
    )
    assert md["accepted"] == 3 and md["landed"] == 5
    # Validation of the whole batch (what took ~26 s for the 50 MB file) now takes well under 5 s.
    assert md["landed"] / md["images_per_second"] < 5.0


def test_label_limits_and_max_classes_are_set_in_the_launchpad(cfg, instance):
    (s,) = land(cfg, images=4, seed=22)
    tight = {"ops": {"intake": {"config": {"max_boxes_per_image": 1, "min_acceptance_rate": 0}}}}
    md = metadata(run_intake(cfg, instance, s.batch_id, tight), "validated_batch")
    q = pd.read_parquet(md["quarantine_table"])
    multi = sum(1 for f in (s.path / "labels").iterdir() if len(f.read_text().split("\n")) > 2)
    assert multi > 0 and (q["rule"] == "too_many_boxes").sum() == multi
    assert md["accepted"] + md["quarantined"] == md["landed"] == 4
    few = {"ops": {"intake": {"config": {"max_classes": 2}}}}
    result = run_intake(cfg, instance, s.batch_id, few, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "declares 3 classes, more than max_classes = 2" in str(failure.event_specific_data)


def test_an_imported_partly_labelled_batch_shows_its_counts_in_the_ui_and_in_status(cfg, instance):
    from cv_assets.cli.status import collect_status, render_status
    from cv_assets_tests.support.jobs import ingest

    (coco,) = ingest(cfg, instance, images=10, seed=3, fmt="coco", unlabelled_fraction=0.3)
    (frames,) = ingest(cfg, instance, images=4, seed=4, prefix="field", unlabelled_fraction=1.0)
    rec = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("validated_batch"), asset_partitions=[coco]),
        limit=1,
    ).records[0]
    assert rec.asset_materialization is not None
    meta = metadata_of(rec.asset_materialization)
    assert (meta["landed"], meta["accepted"], meta["unlabelled"], meta["quarantined"]) == (
        10, 7, 3, 0,
    )  # fmt: skip
    assert meta["format"] == "coco" and meta["labels"] == "partial"
    assert meta["annotations_in"] == meta["boxes"] > 0 and meta["annotations_quarantined"] == 0
    assert str(meta["adapter"]).startswith("cv_assets.coco/")
    batches = collect_status(cfg)["batches"]
    assert batches["images_landed"] == 14
    assert (batches["images_accepted"], batches["images_unlabelled"]) == (7, 7)
    assert batches["images_quarantined"] == 0
    shown = render_status(collect_status(cfg))
    assert "14 landed = 7 labelled + 7 unlabelled + 0 quarantined" in shown
    assert f"{frames} (yolo, none): 4 landed = 0 labelled + 4 unlabelled" in shown
