"""Whoever can write the artifact store cannot make a worker run code or use other weights: a
record pointed at a crafted pickle is refused against the hash in the Dagster instance, and
the pickle never runs."""

import json
from pathlib import Path

import dagster as dg
import pytest
import torch

from cv_assets.definitions import build_defs
from cv_assets.lib.core.store import sha256_file
from cv_assets_tests.support.jobs import QUIET, train
from cv_assets_tests.support.models import RunsAShellCommand

pytestmark = pytest.mark.slow


def _evaluate(cfg, instance):
    job = build_defs(cfg).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("model_evaluation")],
        run_config=QUIET,
        raise_on_error=False,
    )


def _failure(result) -> str:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(event.event_specific_data)


def test_a_record_pointed_at_a_crafted_pickle_is_refused_and_nothing_runs(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success
    marker = cfg.home / "pwned"
    evil = Path(cfg.artifacts_root) / "models" / "evil" / "best.pt"
    evil.parent.mkdir(parents=True)
    torch.save({"model": RunsAShellCommand(marker)}, evil)
    # The attack: the stored record now names the crafted file, with its true hash.
    record_file = Path(cfg.artifacts_root) / "records" / "yolo_model" / "_all.json"
    record = json.loads(record_file.read_text())
    original = record_file.read_bytes()
    record["weights"] = {"uri": str(evil), "sha256": sha256_file(evil)}
    record_file.write_text(json.dumps(record, indent=1, sort_keys=True))
    text = _failure(_evaluate(cfg, instance))
    assert "records/yolo_model/_all.json hashes to" in text and "recorded" in text
    assert "changed after it was written" in text
    assert not marker.exists()
    # Put back, the record is trusted again; then the weights themselves are swapped for the
    # pickle: refused by their recorded hash, and the pickle does not run either.
    record_file.write_bytes(original)
    weights = Path(json.loads(original)["weights"]["uri"])
    weights.write_bytes(evil.read_bytes())
    text = _failure(_evaluate(cfg, instance))
    assert f"{weights}: sha256 is {sha256_file(evil)}" in text and "refusing to load" in text
    assert not marker.exists()
