"""The gate holds whoever starts champion_model (a click in the UI is a run of that asset alone):
after a failed gate, with files that failed parity, or with files of other weights, the step is
refused with the reasons, and neither the registry nor the alias moves."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.cli.status import collect_status
from cv_assets.definitions import build_defs
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.training.promotion import register_candidate
from cv_assets.read_side import registry_for
from cv_assets_tests.support.jobs import QUIET, TINY, check_named, materialized, train

pytestmark = pytest.mark.slow


def _click(cfg, instance, assets: list[str], ops: dict | None = None, defs=None):
    """What *Materialize* on the assets' pages does: a run of exactly these assets."""
    job = (defs or build_defs(cfg)).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        run_config=QUIET | {"ops": ops or {}},
        raise_on_error=False,
    )


def _failure(result) -> str:
    events = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert events, "the step was expected to fail"
    return str(events[-1].event_specific_data)


def _state(cfg) -> tuple:
    reg = registry_for(cfg)
    champ = reg.champion()
    return champ.version if champ else None, len(reg.versions()), len(reg.history())


def test_a_click_after_a_failed_gate_is_refused_and_the_alias_stays(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success  # v1, the champion
    before = _state(cfg)
    rejected = train(cfg, instance, {"force": True, "seed": 5}, min_map50=1.01)
    assert not check_named(rejected, "challenger_beats_champion").passed
    assert materialized(rejected, "champion_model") is None
    click = _click(cfg, instance, ["champion_model"])
    assert not click.success
    text = _failure(click)
    assert "did not bless the challenger" in text and "below the floor 1.010" in text
    assert f"run {rejected.run_id[:8]}" in text  # the evaluation that said no is named
    assert _state(cfg) == before == ("1", 1, 1)


def test_files_that_failed_parity_are_never_promoted(small_home, instance):
    cfg = small_home
    run = train(cfg, instance, mobile={"max_latency_ms": 0.001})
    assert not check_named(run, "onnx_parity_ok").passed
    assert materialized(run, "champion_model") is None
    click = _click(cfg, instance, ["champion_model"])
    text = _failure(click)
    assert "failed parity" in text and "OUTSIDE" in text and "latency" in text
    assert _state(cfg) == (None, 0, 0)


def test_other_weights_files_and_an_unreachable_mlflow_register_nothing(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success  # v1 with its files
    # A new challenger passes the gate, but its own app files were never made: the stored
    # mobile_model record still holds v1's files, which must not ship under v2's name.
    ops = {
        "yolo_model": {"config": TINY | {"force": True, "seed": 11}},
        "model_evaluation": {"config": {"min_map50": 0.0, "epsilon": 1.0}},
    }
    assert _click(cfg, instance, ["yolo_model", "model_evaluation"], ops).success
    text = _failure(_click(cfg, instance, ["champion_model"]))
    v1_sha = registry_for(cfg).get("1").weights_sha256
    assert f"made from weights {v1_sha[:12]}" in text and "re-run mobile_model" in text
    assert _state(cfg) == ("1", 1, 1)
    assert _click(cfg, instance, ["mobile_model"]).success
    # MLflow down at promotion: a clear error naming it, nothing half-registered.
    uri = "http://127.0.0.1:9"
    down = PlatformConfig.from_env(dict(os.environ) | {"MLFLOW_TRACKING_URI": uri})
    text = _failure(_click(down, instance, ["champion_model"], defs=build_defs(down)))
    assert uri in text
    assert _state(cfg) == ("1", 1, 1)
    # Back up, the same records are promoted: the refusals were about the records, nothing else.
    done = _click(cfg, instance, ["champion_model"])
    assert done.success
    champ = materialized(done, "champion_model")
    assert champ is not None and champ["version"] == "2" and champ["status"] == "champion"
    assert _state(cfg) == ("2", 2, 2)


def _interrupted_registration(cfg, instance, seed: int) -> str:
    """A blessed challenger whose registration died before its decision: the records exist, the
    version is created (as champion_model's first writes do), then nothing more happens."""
    ops = {
        "yolo_model": {"config": TINY | {"force": True, "seed": seed}},
        "model_evaluation": {"config": {"min_map50": 0.0, "epsilon": 1.0}},
    }
    assert _click(cfg, instance, ["yolo_model", "model_evaluation", "mobile_model"], ops).success
    records = Path(cfg.artifacts_root) / "records"
    model, evaluation, mobile = (
        json.loads((records / a / "_all.json").read_text())
        for a in ("yolo_model", "model_evaluation", "mobile_model")
    )
    reg = registry_for(cfg)
    return register_candidate(reg, reg.store, model, evaluation, mobile, {}).version


def test_a_half_done_registration_is_completed_or_marked_failed(small_home, instance):
    cfg = small_home
    assert train(cfg, instance).success  # v1
    reg = registry_for(cfg)
    v2 = _interrupted_registration(cfg, instance, seed=21)
    assert reg.get(v2).status == "registered" and reg.champion().version == "1"  # type: ignore[union-attr]
    # Run again on the same records, champion_model completes it.
    assert _click(cfg, instance, ["champion_model"]).success
    assert reg.get(v2).status == "champion"
    # Left behind by a newer model instead, it is closed as failed, and status says so.
    v3 = _interrupted_registration(cfg, instance, seed=22)
    assert train(cfg, instance, {"force": True, "seed": 23}, min_map50=0.0).success
    assert reg.get(v3).status == "failed"
    assert {"version": v3, "status": "failed"}.items() <= next(
        m for m in collect_status(cfg)["models"] if m["version"] == v3
    ).items()
    assert (
        reg.history()[-2]["action"] == "registration_failed" and reg.history()[-2]["version"] == v3
    )
