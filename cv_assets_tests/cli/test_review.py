"""``cv-assets review export`` / ``review import``: a person's corrections become the labels the
next dataset version trains on, and a broken label file is refused before anything lands."""

import csv
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cv_assets.definitions import build_defs
from cv_assets.defs.ingest.partitions import BATCHES
from cv_assets_tests.support.jobs import QUIET, ingest, train
from cv_assets_tests.support.landing import land
from cv_assets_tests.support.processes import cli
from cv_assets_tests.support.review import (
    land_corrupted_batch,
    materialize_queue,
)


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


# --- links and special files: review import reads only the folder's own regular files -------


def review_folder(cfg, tmp_path: Path) -> tuple[Path, Path]:
    """A review folder as ``review export`` writes it, for two images of a landed batch (the
    others stay outside it), and that batch's folder in the landing zone."""
    (s,) = land(cfg, images=4, size=64)
    out = tmp_path / "review"
    images = sorted((s.path / "images").iterdir())[:2]
    labels = {p.stem: (s.path / "labels" / f"{p.stem}.txt").read_text() for p in images}
    for sub in ("images", "labels", "predictions", "crops"):
        (out / sub).mkdir(parents=True)
    for p in images:
        shutil.copy(p, out / "images" / p.name)
        (out / "labels" / f"{p.stem}.txt").write_text(labels[p.stem])
    record = {"batch_id": s.batch_id, "champion_version": "1", "labels": labels}
    (out / "review.json").write_text(json.dumps(record))
    return out, s.path


def _swap_for_link(path: Path, target: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


def plant(kind: str, out: Path, batch: Path) -> str:
    """Plant one attack in the review folder; returns the entry the refusal must name."""
    outside = sorted((batch / "images").iterdir())[-1]  # landed, and not under review
    if kind == "image_symlink":  # a new image whose bytes come from elsewhere
        (out / "images" / outside.name).symlink_to(outside)
        shutil.copy(batch / "labels" / f"{outside.stem}.txt", out / "labels")
        return f"images/{outside.name}: symbolic link (to {outside})"
    if kind == "label_symlink":
        label = next((out / "labels").iterdir())
        target = batch / "labels" / f"{outside.stem}.txt"
        _swap_for_link(label, target)
        return f"labels/{label.name}: symbolic link (to {target})"
    if kind == "images_folder_symlink":  # the whole batch's images through one link
        _swap_for_link(out / "images", batch / "images")
        return f"images: symbolic link (to {batch / 'images'})"
    if kind == "labels_folder_symlink":
        _swap_for_link(out / "labels", batch / "labels")
        return f"labels: symbolic link (to {batch / 'labels'})"
    if kind == "record_symlink":
        record = out.parent / "elsewhere.json"
        record.write_text((out / "review.json").read_text())
        _swap_for_link(out / "review.json", record)
        return f"review.json: symbolic link (to {record})"
    if kind == "fifo":  # reading it would block forever
        os.mkfifo(out / "images" / "pipe.jpg")
        return "images/pipe.jpg: a FIFO, not a regular file"
    raise AssertionError(kind)


ATTACKS = [
    "image_symlink",
    "label_symlink",
    "images_folder_symlink",
    "labels_folder_symlink",
    "record_symlink",
    "fifo",
]


@pytest.mark.unit
@pytest.mark.parametrize("kind", ATTACKS)
def test_import_refuses_links_and_special_files_and_lands_nothing(cfg, tmp_path, kind):
    out, batch = review_folder(cfg, tmp_path)
    named = plant(kind, out, batch)
    refused = cli("review", "import", str(out))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert named in refused.stderr
    rule = "[not_a_regular_file]" if kind == "fifo" else "[symlink]"
    assert rule in refused.stderr and "never follows a link" in refused.stderr
    assert "nothing was landed" in refused.stderr
    assert [p.name for p in Path(cfg.landing_root).iterdir()] == [batch.name]


@pytest.mark.unit
def test_import_lands_exactly_the_bytes_of_the_folders_own_files(cfg, tmp_path):
    out, batch = review_folder(cfg, tmp_path)
    (out / "images" / ".swap.jpg").symlink_to(batch / "images")  # an editor's: never read
    (out / "predictions" / "extra.txt").symlink_to(batch / "batch.json")  # import skips it
    done = cli("review", "import", str(out), "--batch-id", "fixes-1")
    assert done.returncode == 0, done.stderr
    assert "landed 2 images (0 with changed labels) as batch fixes-1" in done.stdout
    landed = Path(cfg.landing_root) / "fixes-1"
    for sub in ("images", "labels"):
        mine = {p.name: p.read_bytes() for p in (out / sub).iterdir() if p.is_file()}
        mine = {n: b for n, b in mine.items() if not n.startswith(".")}
        assert {p.name: p.read_bytes() for p in (landed / sub).iterdir()} == mine
    assert json.loads((landed / "batch.json").read_text())["source"] == f"review:{batch.name}"
