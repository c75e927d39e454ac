"""The shape of a mobile release: its files, budgets and verdicts, and the digests the gate reads.

Every file is re-evaluated through onnxruntime on the same test images, with the same metric code
(``lib/core/metrics.py``) as the PyTorch evaluation it is compared with. int8 is the app's file only
when it keeps its accuracy and size budget; otherwise fp32 is, and the reason is recorded. The
``.ort`` file is made from the app's ONNX file, since that is what ships.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cv_assets.lib.mobile.export import (
    EXPORT_CODE_VERSION,
    QuantScheme,
)

ONNX_FORMATS = ("onnx_fp32", "onnx_int8", "ort")
FORMATS = (*ONNX_FORMATS, "tflite", "tflite_int8", "mlpackage")
FILE_NAMES = {"onnx_fp32": "model.onnx", "onnx_int8": "model.int8.onnx", "ort": "model.ort",
              "tflite": "model.tflite", "tflite_int8": "model_int8.tflite",
              "mlpackage": "model.mlpackage.zip"}  # fmt: skip


@dataclass(frozen=True)
class Budgets:
    fp32_tolerance: float = 0.005
    int8_tolerance: float = 0.01
    int8_max_size_ratio: float = 0.3
    max_latency_ms: float = 100.0
    max_file_mb: float = 25.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileResult:
    format: str
    path: Path | None
    bytes: int = 0
    map50: float = 0.0
    map50_95: float = 0.0
    delta_map50_95: float = 0.0
    latency_ms: float = 0.0
    tolerance: float = 0.0
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    # parity: run on the test split; structural: Core ML, which cannot run here; conversion: no
    # file was made.
    check: str = "parity"
    tool: str = ""  # the converter, for the files made in the export environment

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d


@dataclass
class Release:
    files: dict[str, FileResult]
    app_format: str
    app_reason: str
    ort_source: str
    opset: int
    usability_report: str
    reference: dict[str, float]
    budgets: Budgets
    scheme: QuantScheme
    # The head's output: final detections (YOLO26, no NMS in the app), else anchors for NMS.
    end2end: bool = False

    @property
    def passed(self) -> bool:
        """The release ships: fp32 and the ``.ort`` file keep accuracy and meet their budgets."""
        return self.files["onnx_fp32"].passed and self.files["ort"].passed

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "app_format": self.app_format,
            "app_reason": self.app_reason,
            "ort_source": self.ort_source,
            "opset": self.opset,
            "reference": self.reference,
            "budgets": self.budgets.as_dict(),
            "quantization": self.scheme.as_dict(),
            "end2end": self.end2end,
            "files": {k: f.as_dict() for k, f in self.files.items()},
        }


def release_key(
    weights_sha256: str, imgsz: int, scheme: QuantScheme, opset: int | None, platforms: bool = True
) -> str:
    body = {
        "weights": weights_sha256,
        "imgsz": imgsz,
        "scheme": scheme.as_dict(),
        "opset": opset,
        "code": EXPORT_CODE_VERSION,
    } | ({} if platforms else {"platforms": False})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def parity_metrics(release: Release) -> dict[str, float]:
    out: dict[str, float] = {}
    for fmt, f in release.files.items():
        if f.path is None or f.check != "parity":
            continue
        out |= {
            f"{fmt}_map50_95": f.map50_95,
            f"{fmt}_delta_map50_95": f.delta_map50_95,
            f"{fmt}_latency_ms": f.latency_ms,
            f"{fmt}_mib": f.bytes / 2**20,
        }
    return out


def failure_reason(f: dict[str, Any]) -> str:
    """Why a file is not shipped: its first failed rule, or its conversion error."""
    bad = [r for r in f["reasons"] if "OUTSIDE" in r or r.endswith(": NO")]
    return "; ".join(bad) or "; ".join(f["reasons"]) or "failed its check"


def parity_digest(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per file, what a person checks first (small enough for a registry tag)."""
    out = {}
    for fmt, f in summary["files"].items():
        d = {
            "check": f.get("check", "parity"),
            "map50_95": round(f["map50_95"], 4),
            "delta_map50_95": round(f["delta_map50_95"], 4),
            "mib": round(f["bytes"] / 2**20, 2),
            "latency_ms": round(f["latency_ms"], 1),
            "passed": f["passed"],
        }
        if not f["passed"]:  # a registry tag holds 5,000 characters: keep each reason short
            d["why"] = failure_reason(f)[:200]
        out[fmt] = d
    return out
