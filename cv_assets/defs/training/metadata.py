"""What ``yolo_model`` and ``model_evaluation`` show a person in the UI and log to MLflow."""

from typing import Any

import dagster as dg

from cv_assets.lib.core.plots import markdown_image
from cv_assets.lib.core.report import md_table
from cv_assets.lib.training.gate import GateDecision
from cv_assets.lib.training.records import ModelEvaluation, YoloModel
from cv_assets.lib.training.train import ChallengerEvaluation

SIZES = ("ap_small", "ap_medium", "ap_large")


def model_metadata(rec: YoloModel, mlflow_link: str) -> dict[str, Any]:
    """``yolo_model``'s materialization metadata: the weights, their validation and their run."""
    return {
        "weights": dg.MetadataValue.path(rec["weights"]["uri"]),
        "weights_sha256": rec["weights"]["sha256"],
        "dataset_version": rec["dataset_version"],
        "val_map50": round(rec["val_map50"], 4),
        "val_map50_95": round(rec["val_map50_95"], 4),
        "epochs": rec["epochs_run"],
        "train_seconds": rec["train_seconds"],
        # A killed training resumed from its checkpoint: the epochs it did not repeat.
        "resumed_after_epoch": rec.get("resumed_after_epoch", 0),
        "reused_existing_weights": rec["reused"],
        "mlflow_run_id": rec["mlflow_run_id"],
        "mlflow_run": dg.MetadataValue.url(mlflow_link),
        **({"search": dg.MetadataValue.md(rec["search_md"])} if "search_md" in rec else {}),
    }


def test_metrics(summary: dict[str, Any], decision: GateDecision) -> dict[str, float]:
    """The test split's numbers as MLflow metrics, the difference's interval among them."""
    out = {f"test_{k}": float(v) for k, v in summary.items()}
    if iv := decision.interval:
        out |= {
            "test_delta_map50_95": iv["delta"],
            "test_delta_map50_95_low": iv["low"],
            "test_delta_map50_95_high": iv["high"],
        }
    return out


def shadow_metadata(shadow: dict[str, Any] | None) -> dict[str, Any]:
    if not shadow:
        return {}
    champ = shadow.get("champion") or {}
    rows = [(k, shadow["challenger"][k], champ.get(k, "-")) for k in ("map50", "map50_95")]
    return {
        "shadow_batches": ", ".join(shadow["batches"]),
        "shadow_images": shadow["images"],
        "shadow_map50_95": shadow["challenger"]["map50_95"],
        "shadow": dg.MetadataValue.md(md_table(rows, ["metric", "challenger", "champion"])),
    }


def interval_metadata(decision: GateDecision) -> dict[str, Any]:
    iv = decision.interval
    if not iv:
        return {}
    return {
        "delta_map50_95": round(iv["delta"], 4),
        "delta_ci_low": round(iv["low"], 4),
        "delta_ci_high": round(iv["high"], 4),
        "delta_ci": f"{iv['delta']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] at "
        f"{iv['confidence']:.0%} ({iv['n_images']} test images, {iv['n_resamples']} resamples)",
    }


def evaluation_metadata(
    out: ChallengerEvaluation, record: ModelEvaluation, champion_version: str | None
) -> dict[str, Any]:
    summary, champ = out.summary, out.champion or {}
    rows = [(k, v, champ.get(k, "-")) for k, v in summary.items() if k != "n_images"]
    changes = [
        (c["class"], c["instances"], c["champion"], c["challenger"], f"{c['change']:+.4f}")
        for c in out.decision.class_changes
    ]
    sizes = {k: summary[k] for k in SIZES if k in summary}
    return {
        "map50": summary["map50"],
        "map50_95": summary["map50_95"],
        "precision": summary["precision"],
        "recall": summary["recall"],
        **sizes,
        "test_images": record["test_images"],
        "champion_version": champion_version or "none",
        "gate_passed": out.decision.passed,
        **interval_metadata(out.decision),
        "vs_champion": dg.MetadataValue.md(md_table(rows, ["metric", "challenger", "champion"])),
        **(
            {
                "class_changes": dg.MetadataValue.md(
                    md_table(changes, ["class", "boxes", "champion", "challenger", "change"])
                )
            }
            if changes
            else {}
        ),
        "gate": dg.MetadataValue.md("\n".join(f"- {r}" for r in out.decision.reasons)),
        **shadow_metadata(record.get("shadow")),
        **{k: dg.MetadataValue.md(markdown_image(png, k)) for k, png in out.plots.items()},
    }
