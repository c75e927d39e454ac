"""The app-file converters that cannot live in the platform's environment: LiteRT and Core ML.

Run as ``<export python> -m cv_assets.lib.mobile.convert_worker REQUEST.json`` inside the export
virtualenv (``make export-install``, ``.venv-export``). It exists because the converters' pins
clash with ours: coremltools 9.0 fails on numpy 2.4 (``TypeError: only 0-dimensional arrays can
be converted to Python scalars`` while converting the traced model; we pin numpy 2.4), and
litert-torch 0.10.0 needs ``typing-extensions<4.13`` and brings JAX. The export environment holds
the same torch and Ultralytics as ours, with numpy 2.3.

One request, one format, one process: a converter that crashes (or is killed for memory) loses
only its own file. The request is JSON::

    {"format": "tflite" | "tflite_int8" | "mlpackage", "weights": ".pt", "imgsz": 320,
     "out": "file to write", "meta": {...}, "calibration": [image paths], "source": ".tflite",
     "conf": 0.25, "iou": 0.7}

and the worker writes ``<out>.result.json`` (``{"path", "seconds", "converter"}``) or exits
non-zero with the converter's reason as the last line of stderr. This module imports only the
standard library at the top, and nothing of the platform but ``lib/core/onnx_detect``'s letterbox
(numpy and OpenCV) and names from ``litert_detect`` and ``contract``, so the platform's
environment can import it too.

A one-to-many head (YOLO11) and an end-to-end head (YOLO26, ``meta["end2end"]``) are converted
alike, except that the end-to-end head keeps its final detections (Ultralytics' ``nms=False``) in
every file, and its Core ML file is the ML program alone: Apple's NMS has nothing to do.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import zipfile
from importlib import metadata as pkg
from pathlib import Path
from typing import Any

# The ops that decode boxes and scores in litert-torch's names for Ultralytics' Detect head: its
# own ops (``Detect_23;16``), the DFL, the box normalisation and the output. The convolution
# branches (``Detect_23/...Sequential...``) are quantized like the rest of the network. An
# end-to-end head's top-k, gathers and class-id arithmetic are its own ops too (``Detect_23;37``),
# so they stay in float: quantized, its class-id column would round to other classes (why
# Ultralytics refuses its own int8 LiteRT export of an end-to-end head).
FLOAT_HEAD = (
    r".*(Detect_\d+(;|/ultralytics\.nn\.modules\.block\.DFL)|_NormalizeCoords;"
    r"|serving_default_output).*"
)


def _ultralytics_export(weights: str, imgsz: int, tmp: Path, **kw: Any) -> Path:
    from ultralytics import YOLO

    src = tmp / "model.pt"
    shutil.copyfile(weights, src)
    out = YOLO(str(src)).export(imgsz=imgsz, device="cpu", batch=1, verbose=False, **kw)
    if not out or not Path(out).exists():
        raise RuntimeError(f"Ultralytics' {kw['format']} export produced no file")
    return Path(out)


def _add_tflite_meta(path: Path, meta: dict[str, Any]) -> None:
    # Ultralytics appends its metadata.json the same way: a .tflite is a flatbuffer that tolerates
    # a zip directory at its end, and LiteRT's interpreter ignores it.
    from cv_assets.lib.core.litert_detect import META_ENTRY  # its reader names the entry

    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(META_ENTRY, json.dumps(meta, sort_keys=True))


def _end2end(req: dict[str, Any]) -> bool:
    """Whether the weights' head is end-to-end (YOLO26): the ONNX export's metadata said so."""
    return bool(req["meta"].get("end2end"))


def tflite(req: dict[str, Any], tmp: Path) -> str:
    """fp32 LiteRT through Ultralytics' exporter (litert-torch): a one-to-many head's boxes
    normalised to the input; an end-to-end head's final detections (``nms=False``) in pixels."""
    e2e = {"nms": False} if _end2end(req) else {}
    made = _ultralytics_export(req["weights"], req["imgsz"], tmp, format="litert", **e2e)
    shutil.copyfile(made, req["out"])
    _add_tflite_meta(Path(req["out"]), req["meta"])
    return f"litert-torch {pkg.version('litert-torch')}"


def tflite_int8(req: dict[str, Any], tmp: Path) -> str:
    """Static int8 (int8 weights and activations, fp32 input and output, the head's decoding in
    float) of the fp32 file, calibrated on the same letterboxed training images as the ONNX int8
    file."""
    from ai_edge_quantizer import (  # pyright: ignore[reportMissingImports]: export venv only
        qtyping,
        quantizer,
        recipe,
    )

    from cv_assets.lib.core.onnx_detect import letterbox, read_image

    if not req["calibration"]:
        raise RuntimeError("int8 quantization needs calibration images; the dataset has none")
    plain = tmp / "fp32.tflite"
    with zipfile.ZipFile(req["source"]) as zf:  # the quantizer wants the bare flatbuffer
        start = min((i.header_offset for i in zf.infolist()), default=None)
    data = Path(req["source"]).read_bytes()
    plain.write_bytes(data[:start] if start else data)
    qt = quantizer.Quantizer(str(plain))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    # fp32 at the graph's edges, as the fp32 file: the app's pre- and post-processing is the same.
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        qt.update_quantization_recipe(
            regex=".*", operation_name=op, algorithm_key=recipe.AlgorithmName.NO_QUANTIZE
        )
    # The head's decoding stays in float, as in the ONNX int8 file: quantizing it cost 7.5 points
    # of mAP50-95 on the demo's model, keeping it in float gained 0.4 at 0.29x the size.
    qt.update_quantization_recipe(
        regex=FLOAT_HEAD,
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=recipe.AlgorithmName.NO_QUANTIZE,
    )
    samples = [{"args_0": letterbox(read_image(p), req["imgsz"])[0]} for p in req["calibration"]]
    result = qt.calibrate({"serving_default": samples})
    qt.quantize(calibration_result=result).export_model(req["out"], overwrite=True)
    _add_tflite_meta(Path(req["out"]), req["meta"])
    return f"ai-edge-quantizer {pkg.version('ai-edge-quantizer')}"


def mlpackage(req: dict[str, Any], tmp: Path) -> str:
    """Zipped (one file to download, sha256 and swap, unzipped by the app): for a one-to-many
    head, an ML program with Apple's NMS in a pipeline (what Vision's VNCoreMLRequest expects);
    for an end-to-end head, the ML program alone, whose output is already the final detections.
    Both compute in float16, as the Neural Engine does."""
    import coremltools as ct

    from cv_assets.lib.mobile.contract import COREML_END2END_OUTPUT  # the contract names it

    if _end2end(req):
        made = _ultralytics_export(
            req["weights"], req["imgsz"], tmp, format="coreml", nms=False, quantize=16
        )
        model = ct.models.MLModel(str(made), skip_model_load=True)
        # The traced output is named after a MIL variable (``var_1439``): give it the name the
        # manifest's contract uses.
        spec = model.get_spec()
        ct.utils.rename_feature(spec, spec.description.output[0].name, COREML_END2END_OUTPUT)
        model = ct.models.MLModel(spec, weights_dir=model.weights_dir, skip_model_load=True)
    else:
        made = _ultralytics_export(
            req["weights"], req["imgsz"], tmp, format="coreml", nms=True,
            conf=req.get("conf", 0.25), iou=req.get("iou", 0.7),
        )  # fmt: skip
        model = ct.models.MLModel(str(made), skip_model_load=True)
    model.user_defined_metadata["cv_assets"] = json.dumps(req["meta"], sort_keys=True)
    model.short_description = f"cv_assets detector {req['meta'].get('weights_sha256', '')[:12]}"
    saved = tmp / "stamped" / "model.mlpackage"
    saved.parent.mkdir()
    model.save(str(saved))
    zip_dir(saved, Path(req["out"]))
    return f"coremltools {ct.__version__}"


def zip_dir(folder: Path, out: Path) -> None:
    """``folder`` as a zip whose bytes depend only on its files (sorted names, fixed times)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo(
                    f"{folder.name}/{p.relative_to(folder)}", (1980, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, p.read_bytes())


CONVERTERS = {"tflite": tflite, "tflite_int8": tflite_int8, "mlpackage": mlpackage}


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[0]).read_text())
    fmt = req["format"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"cv_assets_{fmt}_") as tmp:
        try:
            converter = CONVERTERS[fmt](req, Path(tmp))
        except Exception as e:  # the converter's own reason, on one line, for the caller
            print(f"{fmt} conversion failed: {type(e).__name__}: {e}".replace("\n", " "),
                  file=sys.stderr)  # fmt: skip
            return 1
    result = {"path": req["out"], "seconds": time.perf_counter() - t0, "converter": converter}
    Path(req["out"] + ".result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
