"""``cv-assets predict``: detections from a mobile file through onnxruntime, with no torch.

The champion is found through the registry's published pointer (``registry/champion.json``),
which is rewritten whenever the alias moves, so this never imports MLflow either: it starts in
well under a second. Each image is handled on its own: a file that cannot be read gets an error
entry naming it, the others still get detections, and the exit status says something failed.
A model file that cannot be loaded (missing, not ONNX, truncated, external data outside its
folder, not a detector) is one line, ``cannot load model PATH: <reason>``, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cv_assets.lib.core.settings import PlatformConfig


class ModelNotFound(ValueError):
    """No model to load: no champion, no such format, or a file that cannot be loaded."""


def _reason(e: BaseException) -> str:
    """onnxruntime's message on one line, without its ``[ONNXRuntimeError] : 1 : FAIL :`` head."""
    text = " ".join(str(e).split()) or type(e).__name__
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)


def load_detector(path: Path) -> Any:
    """A detector of ``path`` (onnxruntime, or LiteRT for ``.tflite``), or
    ``ModelNotFound("cannot load model PATH: why")``.

    onnxruntime refuses what it cannot run (a truncated file, an external-data location that
    leaves the model's folder) with its own exception types, none of them ``OSError``; any of
    them, and a file that loads but is not a detector, is the same one-line refusal.
    """
    from cv_assets.lib.core.onnx_detect import OnnxDetector, open_detector

    try:
        det = open_detector(path)
        if isinstance(det, OnnxDetector):
            shapes = [det.session.get_inputs()[0].shape, det.session.get_outputs()[0].shape]
        else:  # LiteRT
            it = det.interpreter
            shapes = [list(d["shape"]) for d in (*it.get_input_details(),
                                                 *it.get_output_details()[:1])]  # fmt: skip
        out = shapes[1]
        if len(shapes[0]) != 4 or len(out) != 3:
            raise ValueError(
                f"not a detector: expects input (1, 3, size, size) and output "
                f"(1, 4 + classes, anchors) or end-to-end (1, detections, 6), has output {out}"
            )
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise ModelNotFound(f"cannot load model {path}: {_reason(e)}") from None
    return det


def resolve_model(
    model: str, fmt: str, cfg: PlatformConfig | None = None
) -> tuple[Path, dict[str, Any]]:
    """A local model file and what is known about it: a path, or ``champion`` of ``cfg``'s
    home."""
    if model != "champion":
        path = Path(model)
        if not path.is_file():
            raise ModelNotFound(
                f"cannot load model {model}: no such file (give an .onnx/.ort/.tflite path or "
                "'champion')"
            )
        return path, {"source": str(path)}
    from cv_assets.lib.tracking.registry import URI_TAGS, read_champion
    from cv_assets.read_side import open_store

    if cfg is None:
        raise ModelNotFound("'champion' needs the platform's configuration (CV_ASSETS_HOME)")
    store = open_store(cfg)
    champ = read_champion(store)
    if champ is None:
        raise ModelNotFound(f"no champion in {cfg.artifacts_root}: train one first (make demo)")
    mobile = champ.get("mobile") or {}
    chosen = mobile.get("app_format") if fmt == "app" else fmt
    uri = mobile.get(URI_TAGS.get(chosen or "", ""), None)
    if not uri:
        raise ModelNotFound(
            f"champion v{champ['version']} has no {chosen or 'mobile'} file; "
            "materialize mobile_model for it"
        )
    key = store.key_of(uri)
    local = store.local_path(key)
    if local is None:
        local = cfg.home / "cache" / "models" / key
        if not local.exists():
            store.download(key, local)
    info = {"source": uri, "version": champ["version"], "format": chosen}
    return local, info


def predict(
    model: str,
    images: list[str],
    fmt: str = "app",
    conf: float = 0.25,
    iou: float = 0.7,
    cfg: PlatformConfig | None = None,
) -> tuple[dict[str, Any], int]:
    """The JSON document ``predict`` prints, and the number of images that failed."""
    from cv_assets.lib.core.onnx_detect import ImageUnreadable, read_image

    path, info = resolve_model(model, fmt, cfg)
    det = load_detector(path)
    names = det.class_names
    results, failed = [], 0
    for p in images:
        try:
            img = read_image(p)
        except ImageUnreadable as e:
            failed += 1
            print(f"cv-assets predict: {e}", file=sys.stderr)
            results.append({"image": p, "error": str(e)})
            continue
        h, w = img.shape[:2]
        try:
            found = det.detect(img, conf=conf, iou=iou).tolist()
        except Exception as e:  # a model that loads but cannot run: the model's fault, not p's
            raise ModelNotFound(f"cannot run model {path} on {p}: {_reason(e)}") from None
        boxes = []
        for x1, y1, x2, y2, c, k in found:
            boxes.append({
                "class_id": int(k),
                "class": names[int(k)] if int(k) < len(names) else str(int(k)),
                "confidence": round(c, 4),
                "box_xyxy": [round(v, 1) for v in (x1 * w, y1 * h, x2 * w, y2 * h)],
            })  # fmt: skip
        results.append({"image": p, "width": w, "height": h, "detections": boxes})
    doc = {"model": info | {"imgsz": det.imgsz, "classes": names}, "results": results}
    return doc, failed


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    """``cv-assets predict IMAGE...``: exit 1 when an image failed, 2 when no model loads."""
    try:
        doc, failed = predict(args.model, args.images, args.format, args.conf, args.iou, cfg)
    except ModelNotFound as e:
        print(f"cv-assets predict: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=1))
    return 1 if failed else 0
