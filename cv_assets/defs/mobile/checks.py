"""Parity checks: each converted file keeps the model's accuracy within its budgets."""

from typing import Any

import dagster as dg

from cv_assets.lib.core.report import md_table
from cv_assets.lib.mobile.release import FORMATS

PARITY_CHECK = dg.AssetCheckSpec(
    "onnx_parity_ok",
    asset="mobile_model",
    blocking=True,
    description="fp32 ONNX and the .ort file, re-evaluated through onnxruntime on the test "
    "split, keep PyTorch's mAP50-95 within tolerance and meet size and latency budgets. "
    "Blocks champion_model when it fails.",
)
INT8_CHECK = dg.AssetCheckSpec(
    "int8_parity_ok",
    asset="mobile_model",
    description="int8 keeps mAP50-95 within its tolerance at its size budget; when it fails, "
    "fp32 becomes the app's file (a warning, not a block).",
)


def parity_table(summary: dict[str, Any]) -> str:
    rows = []
    for fmt in FORMATS:
        f = summary["files"][fmt]
        rows.append(
            (
                fmt,
                f["map50"],
                f["map50_95"],
                f"{f['delta_map50_95']:+.4f}",
                f["tolerance"],
                round(f["latency_ms"], 1),
                round(f["bytes"] / 2**20, 2),
                "pass" if f["passed"] else "FAIL",
            )
        )
    return md_table(
        rows, ["file", "mAP50", "mAP50-95", "vs PyTorch", "tolerance", "ms", "MiB", "parity"]
    )


def parity_results(summary: dict[str, Any]) -> list[dg.AssetCheckResult]:
    files = summary["files"]
    blocking = [files["onnx_fp32"], files["ort"]]
    reasons = [f"{f['format']}: {r}" for f in blocking for r in f["reasons"]]
    int8 = files["onnx_int8"]
    return [
        dg.AssetCheckResult(
            check_name="onnx_parity_ok",
            asset_key="mobile_model",
            passed=all(f["passed"] for f in blocking),
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(r for r in reasons if "OUTSIDE" in r) or "all within budget",
            metadata={
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons)),
                "files": dg.MetadataValue.md(parity_table(summary)),
            },
        ),
        dg.AssetCheckResult(
            check_name="int8_parity_ok",
            asset_key="mobile_model",
            passed=int8["passed"],
            severity=dg.AssetCheckSeverity.WARN,
            description=summary["app_reason"],
            metadata={
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in int8["reasons"])),
                "app_format": summary["app_format"],
            },
        ),
    ]
