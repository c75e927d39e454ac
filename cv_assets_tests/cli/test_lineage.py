"""``cv-assets lineage``: a model version traced back to its batches from the event log and MLflow,
with every hash checked against the file itself, and unchanged by later trainings."""

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cv_assets.definitions import build_defs
from cv_assets.lib.tracking.registry import URI_TAGS
from cv_assets.read_side import metadata_of, registry_for
from cv_assets_tests.support.jobs import QUIET, TINY, ingest, materialized, train
from cv_assets_tests.support.processes import cli


def sha256_of(uri: str) -> str:
    return hashlib.sha256(Path(uri).read_bytes()).hexdigest()


def validated(instance: dg.DagsterInstance, batch: str) -> tuple[str, dict[str, Any]]:
    """The run and metadata of a batch's newest validated_batch materialization."""
    flt = dg.AssetRecordsFilter(dg.AssetKey("validated_batch"), asset_partitions=[batch])
    (rec,) = instance.fetch_materializations(flt, limit=1).records
    assert rec.asset_materialization is not None
    return rec.run_id, metadata_of(rec.asset_materialization)


def lineage(*args: str, text: bool = True) -> tuple[dict[str, Any], str]:
    """The JSON and (with ``text``) the text of one lineage, both from the real CLI."""
    as_json = cli("lineage", *args, "--json")
    assert as_json.returncode == 0, as_json.stderr
    if not text:
        return json.loads(as_json.stdout), ""
    as_text = cli("lineage", *args)
    assert as_text.returncode == 0, as_text.stderr
    return json.loads(as_json.stdout), as_text.stdout


def assert_text_says_what_json_says(doc: dict[str, Any], text: str) -> None:
    m, d, w = doc["model"], doc["dataset"], doc["weights"]
    expected = [
        f"v{m['version']} [{m['status']}]",
        f"/runs/{m['registered_in']['dagster_run_id']}",
        f"2. dataset {d['version']}: {d['images']} images (train {d['train']}, val {d['val']}, "
        f"test {d['test']}); snapshot in Dagster run /runs/{d['snapshot_in']['dagster_run_id']}",
        f"3. weights sha256 {w['sha256']} (verified)",
        f"MLflow run {w['mlflow_run']['run_id']}",
        f"trained in Dagster run /runs/{w['trained_in']['dagster_run_id']}",
    ]
    expected += [
        f"{b['batch_id']}: {b['landed']} landed, {b['accepted']} accepted, "
        f"{b['quarantined']} quarantined; manifest sha256 {b['manifest_sha256']}; "
        f"validated in Dagster run /runs/{b['validated_in']['dagster_run_id']}"
        for b in doc["batches"]
    ]
    expected += [
        f"{f['format']}: sha256 {f['sha256']} (verified) {f['uri']}" for f in doc["mobile"]["files"]
    ]
    expected.append(
        f"converted in Dagster run /runs/{doc['mobile']['converted_in']['dagster_run_id']}"
    )
    for line in expected:
        assert line in text, f"{line!r} is not in the text:\n{text}"
    assert "PROBLEMS" not in text


def assert_true_lineage(doc: dict[str, Any], instance, reg, version: str, run: Any) -> None:
    """Every link of ``version`` against what Dagster, MLflow and the files themselves say."""
    mv = reg.get(version)
    dataset = materialized(run, "training_dataset")
    assert dataset is not None
    assert doc["problems"] == []
    assert doc["model"]["version"] == version
    assert doc["model"]["registered_in"]["dagster_run_id"] == run.run_id
    assert [b["batch_id"] for b in doc["batches"]] == sorted(dataset["batch_ids"])
    for b in doc["batches"]:
        run_id, md = validated(instance, b["batch_id"])
        assert b["validated_in"]["dagster_run_id"] == run_id
        assert (b["landed"], b["accepted"], b["quarantined"]) == (
            md["landed"],
            md["accepted"],
            md["quarantined"],
        )
        assert b["manifest_sha256"] == md["manifest_sha256"]
    assert doc["dataset"]["version"] == dataset["dataset_version"] == mv.dataset_version
    assert doc["dataset"]["images"] == dataset["images"]
    assert doc["dataset"]["snapshot_in"]["dagster_run_id"] == run.run_id
    w = doc["weights"]
    assert w["sha256"] == sha256_of(mv.weights_uri) and w["verified"]
    assert w["mlflow_run"]["run_id"] == mv.mlflow_run_id
    assert w["mlflow_run"]["dataset_version"] == mv.dataset_version
    assert w["trained_in"]["dagster_run_id"] == run.run_id
    files = {f["format"]: f for f in doc["mobile"]["files"]}
    named = {fmt: mv.mobile[tag] for fmt, tag in URI_TAGS.items() if mv.mobile[tag]}
    assert set(files) == set(named) and {"onnx_fp32", "ort"} <= set(files)
    for fmt, uri in named.items():
        assert files[fmt]["uri"] == uri
        assert files[fmt]["sha256"] == sha256_of(uri) and files[fmt]["verified"]
    assert doc["mobile"]["converted_in"]["dagster_run_id"] == run.run_id


@pytest.mark.slow
def test_lineage_traces_v1_to_its_own_batches_even_after_a_newer_model(cfg, instance):
    # small_home's data (its fixture lives in defs/conftest.py, out of this folder's reach).
    originals = ingest(cfg, instance, batches=2, images=24, size=96)
    first = train(cfg, instance)
    assert first.success
    reg = registry_for(cfg)
    v1, v1_text = lineage("1")
    assert [b["batch_id"] for b in v1["batches"]] == sorted(originals)
    assert_true_lineage(v1, instance, reg, "1", first)
    assert_text_says_what_json_says(v1, v1_text)
    assert lineage(text=False)[0] == v1  # no version: the champion

    (late,) = ingest(cfg, instance, batches=1, images=24, size=96)
    # epsilon 1: the gate passes whatever two-epoch models score, so v2 is registered and promoted.
    rc = QUIET | {
        "ops": {
            "yolo_model": {"config": TINY | {"seed": 1}},
            "model_evaluation": {"config": {"min_map50": 0.0, "epsilon": 1.0}},
        }
    }
    second = (
        build_defs(cfg)
        .resolve_job_def("training_job")
        .execute_in_process(instance=instance, run_config=rc)
    )
    champ = materialized(second, "champion_model")
    champion = reg.champion()
    assert champ is not None and champ["version"] == "2"
    assert champion is not None and champion.version == "2"

    v2, v2_text = lineage()
    assert_true_lineage(v2, instance, reg, "2", second)
    assert_text_says_what_json_says(v2, v2_text)
    assert late in [b["batch_id"] for b in v2["batches"]]
    assert v2["weights"]["sha256"] != v1["weights"]["sha256"]
    assert v2["dataset"]["version"] != v1["dataset"]["version"]

    # v1 still names its own batches, dataset, weights, MLflow run and files, not the newest ones.
    again, again_text = lineage("v1")
    assert late not in [b["batch_id"] for b in again["batches"]]
    assert {k: v for k, v in again.items() if k != "model"} == {
        k: v for k, v in v1.items() if k != "model"
    }
    assert again["model"]["status"] == "archived"
    assert_true_lineage(again, instance, reg, "1", first)
    assert_text_says_what_json_says(again, again_text)

    # A file changed after its release was proven is named, and the command fails.
    ort = next(f for f in v1["mobile"]["files"] if f["format"] == "ort")
    Path(ort["uri"]).write_bytes(b"not the file that was proven")
    tampered = cli("lineage", "1")
    assert tampered.returncode == 1
    assert f"ort: sha256 {ort['sha256']} (NOT VERIFIED)" in tampered.stdout
    assert f"mobile file ort: {ort['uri']} hashes to {sha256_of(ort['uri'])}" in tampered.stdout

    unknown = cli("lineage", "7")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "has no version 7 (registered versions: v1, v2)" in unknown.stderr


@pytest.mark.asset
def test_lineage_without_a_model_exits_2_naming_what_is_missing(cfg):
    no_champion = cli("lineage")
    assert no_champion.returncode == 2 and "Traceback" not in no_champion.stderr
    assert "has no champion yet (registered versions: none)" in no_champion.stderr
    unknown = cli("lineage", "3", "--json")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert "cv_assets_detector has no version 3" in unknown.stderr
