"""The blessing gate: a challenger is promoted only if it beats the champion."""

from typing import Any

import dagster as dg

from cv_assets.defs.training.metadata import interval_metadata
from cv_assets.lib.core.report import md_table
from cv_assets.lib.training.gate import GateDecision

GATE_CHECK = dg.AssetCheckSpec(
    "challenger_beats_champion",
    asset="model_evaluation",
    blocking=True,
    description="mAP50 above the floor and mAP50-95 no worse than the champion's (minus epsilon); "
    "optionally the paired-bootstrap interval's lower bound and each class's AP. Blocks "
    "champion_model when it fails, however champion_model is started.",
)


def gate_result(
    decision: GateDecision, challenger: dict[str, Any], champion: dict[str, Any] | None
) -> dg.AssetCheckResult:
    keys = ("map50", "map50_95", "precision", "recall")
    rows = [(k, challenger[k], champion[k] if champion else "-") for k in keys]
    return dg.AssetCheckResult(
        check_name="challenger_beats_champion",
        asset_key="model_evaluation",
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("blessed: " if decision.passed else "not blessed: ")
        + "; ".join(decision.reasons),
        metadata={
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "metrics": dg.MetadataValue.md(md_table(rows, ["metric", "challenger", "champion"])),
            **interval_metadata(decision),
        },
    )
