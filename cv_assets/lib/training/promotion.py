"""What must hold before a model may become the champion, whoever starts ``champion_model``.

The blocking checks stop ``champion_model`` inside the run that evaluates the challenger. They do
not stop a person who materializes ``champion_model`` on its own later, nor an automation tick
after ``model_evaluation`` was re-run alone: then the step reads whatever records are stored. So
the step itself re-reads the verdicts from those records and refuses, with the reasons, when any
is missing or negative, or when the records do not describe the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.mobile.records import MobileModel
from cv_assets.lib.mobile.release import parity_digest
from cv_assets.lib.tracking.mlflow_model import log_detector_model
from cv_assets.lib.tracking.registry import URI_TAGS, ModelVersion, Registry
from cv_assets.lib.training.records import ChampionModel, ModelEvaluation, YoloModel

# The mobile files whose parity blocks promotion (int8 is a warning: fp32 ships instead).
BLOCKING_FORMATS = ("onnx_fp32", "ort")


class PromotionRefused(ValueError):
    """The records do not allow a promotion; the message says why and what to run."""


def promotion_refusal(
    evaluation: ModelEvaluation, model: YoloModel, mobile: MobileModel
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
    gate: dict[str, Any] = dict(evaluation.get("gate") or {})
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
    files: dict[str, Any] = (mobile.get("summary") or {}).get("files") or {}
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


def register_candidate(
    reg: Registry,
    store: ArtifactStore,
    model: YoloModel,
    evaluation: ModelEvaluation,
    mobile: MobileModel,
    dagster_tags: dict[str, str],
) -> ModelVersion:
    """The registry version of a blessed challenger: an MLflow logged model (the app's fp32 ONNX
    through the onnx flavor, the PyTorch weights beside it, the test metrics on it), registered
    once per weights hash. Tags keep identities only: hashes, versions, file URIs."""
    files, w = mobile["files"], model["weights"]
    tags = {
        "weights_uri": w["uri"],
        "weights_sha256": w["sha256"],
        "dataset_version": model["dataset_version"],
        "imgsz": str(model["params"]["imgsz"]),
        "class_names": json.dumps(model["classes"]),
        "status": "registered",
    } | mobile_tags(mobile)
    known = next((v for v in reg.versions() if v.weights_sha256 == w["sha256"]), None)
    if known is not None:  # already a model: no second logged model for the same weights
        reg.set_tags(known.version, mobile_tags(mobile))  # but it ships its newest files
        return reg.get(known.version)
    ev = evaluation["challenger"]
    with scratch_dir("register") as tmp:
        uri = log_detector_model(
            reg.c,
            model["mlflow_run_id"],
            local_file(store, files["onnx_fp32"]["uri"], Path(tmp)),
            local_file(store, w["uri"], Path(tmp)),
            class_names=model["classes"],
            imgsz=int(model["params"]["imgsz"]),
            metrics={k: float(v) for k, v in ev.items() if k != "n_images"},
            tags={k: tags[k] for k in ("dataset_version", "weights_sha256")},
            dagster_tags=dagster_tags,
            name=reg.name,
        )
    return reg.register(uri, model["mlflow_run_id"], tags)


def mobile_tags(mobile: MobileModel) -> dict[str, str]:
    """The registry tags that name a version's app files and their parity."""

    files = mobile["files"]
    return {tag: files[fmt]["uri"] if fmt in files else "" for fmt, tag in URI_TAGS.items()} | {
        "app_format": mobile["summary"]["app_format"],
        "model_card_uri": mobile["model_card"]["uri"],
        "mobile_parity": json.dumps(parity_digest(mobile["summary"])),
        "head_output": "end2end" if mobile["summary"].get("end2end") else "anchors",
    }


def champion_record(reg: Registry, action: str, pending: str | None = None) -> ChampionModel:
    """The current champion as the record downstream assets read (``version`` None: none yet)."""
    champ = reg.champion()
    base: dict[str, Any] = champ.as_dict() if champ else {"version": None, "status": "none"}
    return ChampionModel(**base, action=action, pending_version=pending)


def champion_data_version(record: ChampionModel) -> str:
    """Changes exactly when the champion does, so monitoring shows as stale after a rollback."""
    if not record.get("version"):
        return "none"
    return f"v{record['version']}:{str(record.get('weights_sha256', ''))[:16]}"


@dataclass
class ChampionDecision:
    record: ChampionModel  # the champion after the decision
    action: str  # what happened, in words
    settled: list[str] = field(default_factory=list)  # half-registered versions, now failed


def decide_champion(
    reg: Registry,
    store: ArtifactStore,
    model: YoloModel,
    evaluation: ModelEvaluation,
    mobile: MobileModel,
    *,
    who: str,
    require_approval: bool,
    dagster_tags: dict[str, str],
) -> ChampionDecision:
    """Register a gate-blessed challenger and move the ``champion`` alias to it, or hold it for a
    person's approval when ``require_approval``.

    The gate's verdicts are re-read from the records first, so no way of starting the step can
    bypass them: raises ``PromotionRefused`` with ``promotion_refusal``'s reasons.
    """
    if refusal := promotion_refusal(evaluation, model, mobile):
        raise PromotionRefused(refusal)
    mv = register_candidate(reg, store, model, evaluation, mobile, dagster_tags)
    # An earlier registration that died before its decision is closed, visibly (status, history).
    settled = reg.settle_interrupted(mv.version, who)
    champ = reg.champion()
    why = "; ".join(evaluation["gate"]["reasons"])
    pending = None
    if champ and champ.version == mv.version:
        reg.publish_champion()
        action = "unchanged: already the champion"
    elif require_approval:
        reg.hold_for_approval(mv.version, "gate", why)
        pending = mv.version
        action = f"pending_approval: run `cv-assets promote {mv.version}` to promote it"
    else:
        reg.promote(mv.version, who, why)
        action = f"promoted: v{mv.version} is the champion"
    return ChampionDecision(champion_record(reg, action, pending), action, settled)
