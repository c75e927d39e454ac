"""``cv-assets doctor``: preflight checks a user runs before trusting the platform.

Versions (the pins that must move in lockstep), offline readiness (nothing may download at run
time) and storage (landing zone, artifact store, Dagster home, MLflow) each get a PASS, WARN or
FAIL line with what to do about it. A tracking server that does not answer is a FAIL within
seconds, and the other checks still run; URIs are shown with their credentials masked.
"""

import argparse
import os
import sys
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cv_assets.lib.core import layout
from cv_assets.lib.core.secrets import mask_secrets_in, mask_uri
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.tracking import runs as tracking
from cv_assets.read_side import open_store

PINS = {
    "dagster": "1.13.27",
    "dagster-webserver": "1.13.27",
    "dagster-aws": "0.29.27",
    "dagster-postgres": "0.29.27",
    "torch": "2.14.1",
    "torchvision": "0.29.1",
}
REQUIRED = ["ultralytics", "mlflow", "pandera", "onnx", "onnxruntime", "onnxslim", "evidently"]


@dataclass
class Check:
    status: str  # PASS, WARN, FAIL
    what: str
    detail: str = ""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> list[Check]:
    out = [
        Check(
            "PASS" if sys.version_info[:2] == (3, 11) else "WARN",
            "python",
            f"{sys.version.split()[0]} (3.11 is what CI tests)",
        )
    ]
    for name, want in PINS.items():
        got = _version(name)
        ok = got is not None and got.split("+")[0] == want
        out.append(Check("PASS" if ok else "FAIL", name, f"{got} (pinned {want})"))
    for name in REQUIRED:
        got = _version(name)
        out.append(Check("PASS" if got else "FAIL", name, got or "not installed"))
    pandas = _version("pandas") or "0"
    out.append(
        Check(
            "PASS" if int(pandas.split(".")[0]) < 3 else "FAIL",
            "pandas",
            f"{pandas} (evidently 0.7 needs pandas < 3)",
        )
    )
    return out


def check_offline() -> list[Check]:
    out = [
        Check(
            "PASS" if os.environ.get("YOLO_OFFLINE") == "1" else "WARN",
            "YOLO_OFFLINE",
            "set"
            if os.environ.get("YOLO_OFFLINE") == "1"
            else "unset: make sets it; export YOLO_OFFLINE=1 when running Dagster yourself",
        ),
    ]
    try:
        import ultralytics

        cfg = Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml"
        out.append(
            Check(
                "PASS" if cfg.is_file() else "FAIL",
                "model YAML shipped",
                f"{cfg} (training starts from a YAML, never downloaded weights)",
            )
        )
    except ImportError as e:
        out.append(Check("FAIL", "ultralytics import", str(e)))
    return out


def check_storage(cfg: PlatformConfig) -> list[Check]:
    out = []
    for what, root in (("landing zone", cfg.landing_root), ("artifact store", cfg.artifacts_root)):
        shown = mask_uri(root)
        try:
            store = open_store(cfg, root)
            key = f"{layout.DOCTOR_PREFIX}{uuid.uuid4().hex}"
            store.put_bytes(key, b"ok")
            assert store.get_bytes(key) == b"ok"
            store.delete(key)
            out.append(Check("PASS", what, f"{shown} is writable"))
        except Exception as e:  # any backend error is a finding, not a crash
            said = mask_secrets_in(str(e), [root, cfg.s3_endpoint_url])
            out.append(Check("FAIL", what, f"{shown}: {type(e).__name__}: {said}"))
    dy = cfg.dagster_home / "dagster.yaml"
    missing = f"{dy} missing: `make ui` or `make demo` creates it"
    out.append(
        Check(
            "PASS" if dy.is_file() else "WARN", "Dagster home", f"{dy}" if dy.is_file() else missing
        )
    )
    return [*out, check_tracking(cfg.mlflow_tracking_uri)]


def check_tracking(uri: str) -> Check:
    """The tracking store: a writable folder for SQLite, a server that answers within seconds
    otherwise. The URI is shown masked: a password in it never reaches the screen."""
    shown = mask_uri(uri)
    if uri.startswith("sqlite:///"):
        parent = Path(uri.removeprefix("sqlite:///")).parent
        ok = parent.is_dir() and os.access(parent, os.W_OK)
        return Check("PASS" if ok else "FAIL", "MLflow tracking", shown)
    try:
        where = tracking.check_reachable(uri)
    except tracking.TrackingUnavailable as e:
        return Check("FAIL", "MLflow tracking", str(e))
    if where is None:
        return Check("PASS", "MLflow tracking", f"{shown} (checked at first use)")
    return Check("PASS", "MLflow tracking", f"{shown} (a server accepts connections at {where})")


def check_export_env(configured: str) -> Check:
    """The phones' converters (LiteRT, Core ML): a WARN when missing, since only those files
    are then withheld; the ONNX files and promotions do not need them."""
    import subprocess

    from cv_assets.lib.mobile.platforms import export_python

    what = "export environment (Android .tflite, iOS .mlpackage)"
    python = export_python(configured)
    if python is None or not python.exists():
        return Check("WARN", what, "not installed: run `make export-install` (or set "
                     "CV_ASSETS_EXPORT_PYTHON); phone files will be withheld")  # fmt: skip
    probe = ("from importlib.metadata import version as v; print(', '.join(f'{p} {v(p)}' for p in "
             "('litert-torch', 'ai-edge-quantizer', 'coremltools', 'numpy')))")  # fmt: skip
    try:
        got = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("FAIL", what, f"{python}: {e}")
    if got.returncode != 0:
        return Check("FAIL", what, f"{python}: {(got.stderr.strip().splitlines() or ['?'])[-1]}")
    return Check("PASS", what, f"{python}: {got.stdout.strip()}")


def run_doctor(cfg: PlatformConfig) -> list[Check]:
    return (
        check_versions() + check_offline() + check_storage(cfg)
        + [check_export_env(cfg.export_python)]
    )  # fmt: skip


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``cv-assets doctor``: one line per check; exit 1 when any failed."""
    checks = run_doctor(cfg)
    for c in checks:
        print(f"{c.status:4}  {c.what}: {c.detail}")
    failed = [c for c in checks if c.status == "FAIL"]
    print(
        f"{len(checks) - len(failed)}/{len(checks)} checks passed"
        if not failed
        else f"{len(failed)} check(s) failed"
    )
    return 1 if failed else 0
