"""The promotion rule on its own: which records champion_model refuses, and what it says."""

from typing import cast

import pytest

from cv_assets.lib.mobile.records import MobileModel
from cv_assets.lib.training.promotion import champion_data_version, promotion_refusal
from cv_assets.lib.training.records import ChampionModel, ModelEvaluation, YoloModel

pytestmark = pytest.mark.unit

SHA = "a" * 64
OTHER = "b" * 64


def _records(passed=True, eval_sha=SHA, mobile_sha=SHA, fp32=True, ort=True):
    evaluation = {
        "dagster_run_id": "1234abcd-0000",
        "weights_sha256": eval_sha,
        "gate": {"passed": passed, "reasons": ["mAP50 0.100 is below the floor 0.500"]},
    }
    model = {"weights": {"sha256": SHA, "uri": "/x/best.pt"}}

    def f(ok, fmt):
        reason = f"{fmt}: latency 9.0 ms OUTSIDE (budget 1.0 ms)" if not ok else "ok"
        return {"passed": ok, "reasons": [reason]}

    mobile = {
        "weights_sha256": mobile_sha,
        "summary": {"files": {"onnx_fp32": f(fp32, "fp32"), "ort": f(ort, "ort")}},
    }
    # Only the fields the rule reads: the casts say so, instead of inventing the rest.
    return cast(ModelEvaluation, evaluation), cast(YoloModel, model), cast(MobileModel, mobile)


def test_blessed_matching_proven_records_may_be_promoted():
    assert promotion_refusal(*_records()) is None


def test_failed_gate_is_refused_naming_the_run_and_the_reasons():
    why = promotion_refusal(*_records(passed=False))
    assert why is not None
    assert "run 1234abcd" in why and "below the floor 0.500" in why and "champion stays" in why


def test_missing_verdict_is_refused():
    ev, model, mobile = _records()
    ev = cast(ModelEvaluation, {k: v for k, v in ev.items() if k != "gate"})  # a broken record
    assert "no gate verdict recorded" in (promotion_refusal(ev, model, mobile) or "")


def test_evaluation_of_other_weights_is_refused():
    why = promotion_refusal(*_records(eval_sha=OTHER))
    assert why is not None and "did not score the challenger's weights aaaaaaaaaaaa" in why


def test_mobile_files_of_other_weights_are_refused():
    why = promotion_refusal(*_records(mobile_sha=OTHER))
    assert why is not None and "made from weights bbbbbbbbbbbb" in why


@pytest.mark.parametrize("fmt", ["fp32", "ort"])
def test_failed_parity_of_a_blocking_file_is_refused_with_its_reason(fmt):
    why = promotion_refusal(*_records(fp32=fmt != "fp32", ort=fmt != "ort"))
    assert why is not None and "failed parity" in why and f"{fmt}: latency 9.0 ms OUTSIDE" in why


def test_champion_data_version_changes_with_the_champion_and_says_none_without_one():
    none: ChampionModel = {
        "version": None,
        "status": "none",
        "action": "rolled back",
        "pending_version": None,
    }
    v3: ChampionModel = {
        "version": "3",
        "status": "champion",
        "action": "promoted: v3 is the champion",
        "pending_version": None,
        "weights_sha256": SHA,
    }
    assert champion_data_version(none) == "none"
    assert champion_data_version(v3) == f"v3:{SHA[:16]}"
    other: ChampionModel = {**v3, "weights_sha256": OTHER}
    assert champion_data_version(other) != champion_data_version(v3)
