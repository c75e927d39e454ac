"""The phones' own files: LiteRT ``.tflite`` for Android and a Core ML ``.mlpackage`` for iOS.

They are converted in the export virtualenv (``convert_worker.py`` says why it is separate) and
judged here, in the platform's environment, by code that shares nothing with the converters:

- ``tflite`` and ``tflite_int8`` run through the LiteRT interpreter (``ai-edge-litert``) on the
  test split with the same metric code, tolerances, size and latency budgets as the ONNX files;
  int8 also keeps the ONNX int8 file's size budget against its fp32 file.
- ``mlpackage`` cannot run on Linux (Core ML is Apple's), so its check is structural: the package
  loads, its input is an RGB image of the trained size, its metadata names the weights it was
  made from, and by head: one-to-many, a pipeline with Apple's NMS whose outputs are Vision's
  ``confidence`` and ``coordinates``, whose class labels are the dataset's and whose NMS
  thresholds are the contract's; end-to-end (``meta["end2end"]``), an ML program alone whose one
  output is the contract's ``(1, k, 6)`` detections and whose class names are the dataset's.

Each format fails alone: a converter that is missing, crashes or times out, or a file that misses
its check, is recorded with its reason and is not shipped; the other files are unaffected.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cv_assets.lib.mobile.contract import COREML_CLASS_PAD, COREML_END2END_OUTPUT, end2end_rows
from cv_assets.lib.mobile.export import ExportFailed
from cv_assets.lib.mobile.release import Budgets, FileResult

log = logging.getLogger(__name__)

PLATFORM_FORMATS = ("tflite", "tflite_int8", "mlpackage")
EXPORT_PYTHON_VAR = "CV_ASSETS_EXPORT_PYTHON"
RGB = 20  # Core ML's ImageFeatureType.ColorSpace.RGB


def export_python(configured: str | None = None) -> Path | None:
    """The export environment's interpreter: ``CV_ASSETS_EXPORT_PYTHON``, else the checkout's
    ``.venv-export`` (``make export-install``); None when neither exists."""
    if configured:
        return Path(configured)
    # The checkout's root (an editable install); a deployment sets CV_ASSETS_EXPORT_PYTHON.
    here = Path(__file__).resolve().parents[3] / ".venv-export" / "bin" / "python"
    return here if here.exists() else None


def convert(
    python: Path | None, request: dict[str, Any], timeout_s: float = 900.0
) -> tuple[Path, str]:
    """Run one conversion in the export environment; the file and the converter's name."""
    fmt = request["format"]
    if python is None or not python.exists():
        raise ExportFailed(
            f"{fmt}: the export environment is not installed ({python or '.venv-export'}): run "
            f"`make export-install`, or set {EXPORT_PYTHON_VAR} to its python"
        )
    out = Path(request["out"])
    req_file = out.with_name(out.name + ".request.json")
    req_file.write_text(json.dumps(request))
    # The worker imports cv_assets from a folder holding only a link to this package (-P: no
    # current directory on sys.path): where cv_assets is installed in site-packages, that folder
    # would otherwise put our numpy ahead of the export environment's.
    pkg_root = out.parent / f".{out.name}.pkg"
    pkg_root.mkdir(exist_ok=True)
    if not (pkg_root / "cv_assets").exists():
        (pkg_root / "cv_assets").symlink_to(Path(__file__).resolve().parents[2])
    env = os.environ | {"YOLO_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
                        "PYTHONPATH": str(pkg_root)}  # fmt: skip
    try:
        proc = subprocess.run(
            [str(python), "-P", "-m", "cv_assets.lib.mobile.convert_worker", str(req_file)],
            capture_output=True, text=True, timeout=timeout_s, env=env, cwd=pkg_root,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ExportFailed(f"{fmt} conversion took longer than {timeout_s:.0f} s") from None
    result = out.with_name(out.name + ".result.json")
    if proc.returncode < 0:  # a signal (the OOM killer): its last output says nothing of why
        sig = -proc.returncode
        raise ExportFailed(f"{fmt} conversion failed: exit status {proc.returncode} (killed by "
                           f"signal {sig}, e.g. the kernel's out-of-memory killer)")  # fmt: skip
    if proc.returncode != 0 or not result.exists() or not out.exists():
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise ExportFailed(tail if fmt in tail else f"{fmt} conversion failed: {tail}")
    done = json.loads(result.read_text())
    log.info("%s: %s in %.1f s", fmt, done["converter"], done["seconds"])
    return out, str(done["converter"])


def _coreml_spec(package_zip: Path) -> Any:
    """The model's protobuf spec, read without Core ML (``skip_model_load``)."""
    for name in ("coremltools", "coremltools.models"):  # it warns that it cannot predict here
        logging.getLogger(name).setLevel(logging.ERROR)
    import coremltools as ct

    with tempfile.TemporaryDirectory(prefix="cv_assets_mlpackage_") as tmp:
        with zipfile.ZipFile(package_zip) as zf:
            names = zf.namelist()
            bad = [n for n in names if n.startswith("/") or ".." in n.split("/")]
            if bad or not names:
                raise ValueError(f"the archive holds unsafe or no paths: {bad[:3]}")
            zf.extractall(tmp)
        top = {n.split("/", 1)[0] for n in names}
        if len(top) != 1 or not next(iter(top)).endswith(".mlpackage"):
            raise ValueError(f"the archive holds {sorted(top)}, not one .mlpackage folder")
        return ct.models.MLModel(str(Path(tmp) / top.pop()), skip_model_load=True).get_spec()


def coreml_checks(
    package_zip: Path, imgsz: int, classes: list[str], meta: dict[str, Any],
    conf: float, iou: float,
) -> list[tuple[bool, str]]:  # fmt: skip
    """Each structural fact of the package, with whether it holds (by the head ``meta`` names)."""
    try:
        spec = _coreml_spec(package_zip)
    except Exception as e:
        return [(False, f"does not load as a Core ML package: {type(e).__name__}: {e}")]
    d = spec.description
    inputs = {i.name: i for i in d.input}
    image = inputs.get("image")
    it = image.type.imageType if image and image.type.WhichOneof("Type") == "imageType" else None
    stamped = json.loads(d.metadata.userDefined.get("cv_assets", "{}"))
    found = "" if it is None else f" (found {it.width}x{it.height}, colour space {it.colorSpace})"
    common = [
        (it is not None and (it.width, it.height, it.colorSpace) == (imgsz, imgsz, RGB),
         f"input 'image' is an RGB image of {imgsz}x{imgsz}{found}"),
        (bool(stamped) and all(stamped.get(k) == meta.get(k) for k in
                               ("weights_sha256", "dataset_version", "mlflow_run_id", "end2end")),
         f"metadata names weights {str(meta.get('weights_sha256'))[:12]} and MLflow run "
         f"{meta.get('mlflow_run_id')}"),
    ]  # fmt: skip
    if meta.get("end2end"):
        return common + _end2end_checks(spec, imgsz, classes)
    subs = [m.WhichOneof("Type") for m in spec.pipeline.models]
    nms = next((m.nonMaximumSuppression for m in spec.pipeline.models
                if m.WhichOneof("Type") == "nonMaximumSuppression"), None)  # fmt: skip
    labels = list(nms.stringClassLabels.vector) if nms else []
    pad = [str(i) for i in range(len(classes), len(labels))]
    return [
        (subs == ["mlProgram", "nonMaximumSuppression"],
         f"a pipeline of an ML program and Apple's NMS (found {subs or spec.WhichOneof('Type')})"),
        common[0],
        ([o.name for o in d.output] == ["confidence", "coordinates"],
         f"outputs confidence and coordinates (found {[o.name for o in d.output]})"),
        (labels[: len(classes)] == classes and labels[len(classes):] == pad
         and len(labels) % COREML_CLASS_PAD == 0,
         f"class labels are the dataset's {len(classes)} (padded to {len(labels)} with zero "
         f"scores for Apple's NMS)"),
        (nms is not None and abs(nms.iouThreshold - iou) < 1e-6
         and abs(nms.confidenceThreshold - conf) < 1e-6,
         f"NMS IoU {iou} and confidence {conf}, as the manifest's contract"),
        common[1],
    ]  # fmt: skip


def _end2end_checks(spec: Any, imgsz: int, classes: list[str]) -> list[tuple[bool, str]]:
    """An end-to-end head's package: the ML program alone (its output is already the final
    detections: nothing for Apple's NMS to do), one output of the contract's shape, and the
    dataset's class names in Ultralytics' metadata (the class ids index them)."""
    d, kind = spec.description, spec.WhichOneof("Type")
    rows = end2end_rows(imgsz)
    outs = [(o.name, list(o.type.multiArrayType.shape)) for o in d.output]
    try:
        names = ast.literal_eval(d.metadata.userDefined.get("names", "{}"))
    except (ValueError, SyntaxError):
        names = {}
    named = [names[k] for k in sorted(names)] if isinstance(names, dict) else []
    return [
        (kind == "mlProgram",
         f"an ML program without Apple's NMS: the head is end-to-end (found {kind})"),
        (outs == [(COREML_END2END_OUTPUT, [1, rows, 6])],
         f"one output {COREML_END2END_OUTPUT!r} of shape (1, {rows}, 6): final detections "
         f"(found {outs})"),
        (named == classes, f"class names are the dataset's {len(classes)} (found {named})"),
    ]  # fmt: skip


def platform_files(
    python: Path | None,
    weights: Path,
    imgsz: int,
    out_dir: Path,
    *,
    calibration: list[str],
    meta: dict[str, Any],
    judge: Callable[[str, Path, float], FileResult],
    budgets: Budgets,
    conf: float = 0.25,
    iou: float = 0.7,
    timeout_s: float = 900.0,
) -> dict[str, FileResult]:
    """Convert and check the LiteRT and Core ML files; a failure is that file's result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {"weights": str(weights), "imgsz": imgsz, "calibration": calibration, "meta": meta,
            "conf": conf, "iou": iou}  # fmt: skip
    results: dict[str, FileResult] = {}

    def attempt(fmt: str, file: str, check: Callable[[Path, str], FileResult], **extra: Any):
        try:
            path, tool = convert(
                python, base | {"format": fmt, "out": str(out_dir / file)} | extra, timeout_s
            )
            results[fmt] = check(path, tool)
        except ExportFailed as e:
            results[fmt] = FileResult(fmt, None, check="conversion", reasons=[str(e)])

    def parity(fmt: str, tol: float) -> Callable[[Path, str], FileResult]:
        def check(path: Path, tool: str) -> FileResult:
            r = judge(fmt, path, tol)
            r.tool = tool
            return r

        return check

    attempt("tflite", "model.tflite", parity("tflite", budgets.fp32_tolerance))
    fp32 = results["tflite"]
    if fp32.path is None:
        why = f"int8 is made from the fp32 .tflite, which failed: {fp32.reasons[0]}"
        results["tflite_int8"] = FileResult("tflite_int8", None, check="conversion", reasons=[why])
    else:
        attempt("tflite_int8", "model_int8.tflite", parity("tflite_int8", budgets.int8_tolerance),
                source=str(fp32.path))  # fmt: skip
        q = results["tflite_int8"]
        if q.path is not None:
            ratio = q.bytes / fp32.bytes
            ok = ratio <= budgets.int8_max_size_ratio
            q.reasons.append(f"size {ratio:.3f}x fp32 .tflite {'within' if ok else 'OUTSIDE'} "
                             f"(budget {budgets.int8_max_size_ratio}x)")  # fmt: skip
            q.passed &= ok

    def structural(path: Path, tool: str) -> FileResult:
        size = os.path.getsize(path)
        checks = coreml_checks(path, imgsz, list(meta.get("classes", [])), meta, conf, iou)
        budget = f"size {size / 2**20:.2f} MiB (budget {budgets.max_file_mb} MiB)"
        checks.append((size <= budgets.max_file_mb * 2**20, budget))
        r = FileResult("mlpackage", path, size, check="structural", tool=tool, passed=True)
        for ok, what in checks:
            r.reasons.append(f"{what}: {'yes' if ok else 'NO'}")
            r.passed &= ok
        return r

    attempt("mlpackage", "model.mlpackage.zip", structural)
    return results
