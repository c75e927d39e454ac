"""What must hold before a model may become the champion, whoever starts ``champion_model``.

The blocking checks stop ``champion_model`` inside the run that evaluates the challenger. They do
not stop a person who materializes ``champion_model`` on its own later, nor an automation tick
after ``model_evaluation`` was re-run alone: then the step reads whatever records are stored. So
the step itself re-reads the verdicts from those records and refuses, with the reasons, when any
is missing or negative, or when the records do not describe the same weights.
"""

from __future__ import annotations

from typing import Any

# The mobile files whose parity blocks promotion (int8 is a warning: fp32 ships instead).
BLOCKING_FORMATS = ("onnx_fp32", "ort")


def promotion_refusal(
    evaluation: dict[str, Any], model: dict[str, Any], mobile: dict[str, Any]
) -> str | None:
    """Why these records must not be promoted, or ``None`` when they may.

    Args:
        evaluation: the ``model_evaluation`` record (its gate verdict and the weights it scored).
        model: the ``yolo_model`` record (the challenger's weights).
        mobile: the ``mobile_model`` record (the app files and their parity verdicts).
    """
    sha = model["weights"]["sha256"]
    run = str(evaluation.get("dagster_run_id") or "unknown")[:8]
    where = f"model_evaluation (run {run}) of weights {str(evaluation.get('weights_sha256'))[:12]}"
    gate = evaluation.get("gate") or {}
    if evaluation.get("weights_sha256") != sha:
        return (
            f"{where} did not score the challenger's weights {sha[:12]}: re-run model_evaluation "
            "for this model before promoting it"
        )
    if gate.get("passed") is not True:
        reasons = "; ".join(gate.get("reasons") or ["no gate verdict recorded"])
        return (
            f"{where} did not bless the challenger: {reasons}. The champion stays; champion_model "
            "promotes only what the gate passed"
        )
    if mobile.get("weights_sha256") != sha:
        return (
            f"mobile_model's files were made from weights {str(mobile.get('weights_sha256'))[:12]}"
            f", not the evaluated challenger's {sha[:12]}: re-run mobile_model for this model"
        )
    files = (mobile.get("summary") or {}).get("files") or {}
    failed = [
        f"{fmt}: " + "; ".join(r for r in files.get(fmt, {}).get("reasons", []) if "OUTSIDE" in r)
        for fmt in BLOCKING_FORMATS
        if not files.get(fmt, {}).get("passed", False)
    ]
    if failed:
        return (
            f"mobile_model's files for weights {sha[:12]} failed parity ({' | '.join(failed)}): "
            "a champion never ships files that lost accuracy"
        )
    return None
