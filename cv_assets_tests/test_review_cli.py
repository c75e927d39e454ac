"""``cv-assets review export`` / ``review import``: a person's corrections become the labels the
next dataset version trains on, and a broken label file is refused before anything lands."""

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets_tests.defs.conftest import QUIET, ingest, train
from cv_assets_tests.defs.monitoring.test_review_queue import (
    land_corrupted_batch,
    materialize_queue,
)
from cv_assets_tests.test_cli import cli


def run_intake(cfg, instance, batch_id: str) -> dict:
    instance.add_dynamic_partitions(BATCHES, [batch_id])
    job = build_defs(cfg).resolve_job_def("intake_job")
    r = job.execute_in_process(partition_key=batch_id, instance=instance, run_config=QUIET)
    assert r.success
    return json.loads(
        (Path(cfg.artifacts_root) / f"records/validated_batch/{batch_id}.json").read_text()
    )


def dataset_samples(cfg, instance) -> pd.DataFrame:
    job = build_defs(cfg).resolve_job_def("training_job")
    r = job.execute_in_process(
        instance=instance, run_config=QUIET, asset_selection=[dg.AssetKey("training_dataset")]
    )
    assert r.success
    rec = json.loads((Path(cfg.artifacts_root) / "records/training_dataset/_all.json").read_text())
    return pd.read_parquet(rec["samples"]["uri"])


@pytest.mark.slow
def test_export_edit_import_round_trip_supersedes_the_labels(cfg, instance, tmp_path):
    ingest(cfg, instance, batches=2, images=24, size=96)
    assert train(cfg, instance).success
    plan = land_corrupted_batch(cfg, instance)
    queue = materialize_queue(cfg, instance, plan.batch_id, plan.conf_min)
    out = tmp_path / "review"

    exported = cli("review", "export", "--batch", plan.batch_id, "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    stems = {plan.emptied[0], plan.mismatch[0]}
    assert {p.stem for p in (out / "images").iterdir()} == stems
    assert {p.stem for p in (out / "labels").iterdir()} == stems
    for stem in stems:  # the images exactly as they landed
        landed = Path(cfg.landing_root) / plan.batch_id / "images" / f"{stem}.jpg"
        assert (out / "images" / f"{stem}.jpg").read_bytes() == landed.read_bytes()
    assert (out / "labels" / f"{plan.emptied[0]}.txt").read_text() == ""
    rows = list(csv.DictReader(io.StringIO((out / "review.csv").read_text())))
    assert len(rows) == queue["items"] and rows[0]["rank"] == "1"
    assert {r["kind"] for r in rows} == {"class_mismatch", "missing_label"}
    assert all((out / r["crop"]).is_file() for r in rows)
    assert f"review import {out}" in (out / "README.txt").read_text()

    # A reviewer's typo is refused with the file, the line and the rule; nothing lands.
    mism = plan.mismatch[0]
    (out / "labels" / f"{mism}.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    refused = cli("review", "import", str(out))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"labels/{mism}.txt:2: class id 7 is outside 0..2" in refused.stderr
    assert "[class_out_of_range]" in refused.stderr and "nothing was landed" in refused.stderr
    landing = Path(cfg.landing_root)
    assert not [p for p in landing.iterdir() if "review" in p.name]

    # The reviewer takes the champion's suggestions for both images.
    for stem in stems:
        shutil.copy(out / "predictions" / f"{stem}.txt", out / "labels" / f"{stem}.txt")
    done = cli("review", "import", str(out))
    assert done.returncode == 0, done.stderr
    (fix,) = [p for p in landing.iterdir() if "review" in p.name]
    assert re.fullmatch(rf"{re.escape(plan.batch_id)}-review-\d{{14}}", fix.name)
    marker = json.loads((fix / "batch.json").read_text())
    assert marker["source"] == f"review:{plan.batch_id}" and marker["batch_id"] == fix.name
    assert marker["classes"] == list(cfg.classes)
    assert "2 images (2 with changed labels)" in done.stdout
    again = cli("review", "import", str(out), "--batch-id", fix.name)
    assert again.returncode == 2 and "already in the landing zone" in again.stderr

    # Intake accepts the re-landed images as corrections, and the dataset takes their labels.
    validated = run_intake(cfg, instance, fix.name)
    assert validated["accepted"] == 2 and validated["quarantined"] == 0
    fixes = pd.read_parquet(validated["samples"]["uri"])
    assert set(fixes["supersedes"]) == {f"{plan.batch_id}/images/{s}.jpg" for s in stems}
    samples = dataset_samples(cfg, instance)
    assert samples["sha256"].is_unique
    for stem in stems:
        sha = hashlib.sha256((out / "images" / f"{stem}.jpg").read_bytes()).hexdigest()
        (row,) = pd.DataFrame(samples[samples["sha256"] == sha]).to_dict("records")
        assert row["batch_id"] == fix.name
        corrected = (out / "labels" / f"{stem}.txt").read_text()
        assert Path(row["label_uri"]).read_text() == corrected


@pytest.mark.asset
def test_export_without_a_queue_is_a_clear_error(cfg, tmp_path):
    out = cli("review", "export", "--batch", "batch-0000", "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no review queue for batch 'batch-0000'" in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.unit
def test_import_of_a_folder_that_is_not_an_export_is_refused(cfg, tmp_path):
    (tmp_path / "labels").mkdir()
    out = cli("review", "import", str(tmp_path))
    assert out.returncode == 2 and "review.json" in out.stderr and "Traceback" not in out.stderr
