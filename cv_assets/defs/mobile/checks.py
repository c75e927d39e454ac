"""Parity checks: each converted file keeps the model's accuracy within its budgets."""

from typing import Any

import dagster as dg

from cv_assets.lib.core.report import md_table
from cv_assets.lib.mobile.release import FORMATS, failure_reason
from cv_assets.lib.mobile.releases import PLATFORM

PARITY_CHECK = dg.AssetCheckSpec(
    "onnx_parity_ok",
    asset="mobile_model",
    blocking=True,
    description="Every app file is checked (its table lists them all); fp32 ONNX and the .ort "
    "file, re-evaluated through onnxruntime on the test split, must keep PyTorch's mAP50-95 "
    "within tolerance and meet size and latency budgets. Blocks champion_model when they fail.",
)
INT8_CHECK = dg.AssetCheckSpec(
    "int8_parity_ok",
    asset="mobile_model",
    description="int8 keeps mAP50-95 within its tolerance at its size budget; when it fails, "
    "fp32 becomes the app's file (a warning, not a block).",
)
PLATFORM_CHECK = dg.AssetCheckSpec(
    "platform_files_ok",
    asset="mobile_model",
    description="The Android (.tflite, run through LiteRT on the test split) and iOS "
    "(.mlpackage, checked structurally: Core ML cannot run on Linux) files pass their checks. "
    "A file that fails is not shipped for its platform; the others still ship (a warning).",
)


def _cell(f: dict[str, Any], key: str, fmt: str) -> Any:
    if f.get("check", "parity") != "parity" or f["bytes"] == 0:
        return "—"
    return format(f[key], fmt)


def parity_table(summary: dict[str, Any]) -> str:
    rows = []
    for fmt in FORMATS:
        f = summary["files"].get(fmt)
        if f is None:
            continue
        verdict = "pass" if f["passed"] else "FAIL"
        rows.append((
            fmt, PLATFORM[fmt], f.get("check", "parity"), _cell(f, "map50", ".4f"),
            _cell(f, "map50_95", ".4f"), _cell(f, "delta_map50_95", "+.4f"),
            _cell(f, "latency_ms", ".1f"), round(f["bytes"] / 2**20, 2) if f["bytes"] else "—",
            verdict if f["passed"] else f"{verdict}: {failure_reason(f)}",
        ))  # fmt: skip
    return md_table(
        rows, ["file", "platform", "check", "mAP50", "mAP50-95", "vs PyTorch", "ms", "MiB",
               "verdict"],
    )  # fmt: skip


def _reasons(files: list[dict[str, Any]]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {f['format']}: {r}" for f in files
                                         for r in f["reasons"]))  # fmt: skip


def parity_results(summary: dict[str, Any]) -> list[dg.AssetCheckResult]:
    files = summary["files"]
    blocking = [files["onnx_fp32"], files["ort"]]
    reasons = [f"{f['format']}: {r}" for f in blocking for r in f["reasons"]]
    int8 = files["onnx_int8"]
    phone = [files[f] for f in ("tflite", "tflite_int8", "mlpackage") if f in files]
    withheld = {f["format"]: failure_reason(f) for f in phone if not f["passed"]}
    table = dg.MetadataValue.md(parity_table(summary))
    return [
        dg.AssetCheckResult(
            check_name="onnx_parity_ok",
            asset_key="mobile_model",
            passed=all(f["passed"] for f in blocking),
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(r for r in reasons if "OUTSIDE" in r) or "all within budget",
            metadata={"reasons": _reasons(blocking), "files": table},
        ),
        dg.AssetCheckResult(
            check_name="int8_parity_ok",
            asset_key="mobile_model",
            passed=int8["passed"],
            severity=dg.AssetCheckSeverity.WARN,
            description=summary["app_reason"],
            metadata={"reasons": _reasons([int8]), "app_format": summary["app_format"]},
        ),
        dg.AssetCheckResult(
            check_name="platform_files_ok",
            asset_key="mobile_model",
            passed=bool(phone) and not withheld,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{f} not shipped: {why}" for f, why in withheld.items())
            or ("every phone file passed" if phone else "phone files were not made (config)"),
            metadata={"reasons": _reasons(phone), "files": table},
        ),
    ]
