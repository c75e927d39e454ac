"""Detection through the LiteRT interpreter (``ai-edge-litert``): what an Android app runs.

The same pre- and post-processing as ``onnx_detect`` (letterbox, then NMS or, for an end-to-end
head, none), so a ``.tflite`` file is judged with the same metric code as the ONNX files. One
difference in the one-to-many file's contract: its boxes come out normalised to the input size
(Ultralytics divides them so that int8 keeps the scores' precision), and ``raw`` multiplies them
back to input pixels. An end-to-end file's boxes are in input pixels already.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cv_assets.lib.core.onnx_detect import decode, is_end2end_output, letterbox

# The platform's metadata inside a .tflite (a zip-tolerant file), written by
# lib/mobile/convert_worker.py.
META_ENTRY = "cv_assets.json"


def tflite_metadata(path: str | Path) -> dict[str, Any]:
    """Ultralytics' ``metadata.json`` and the platform's ``cv_assets.json``, appended as a zip."""
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "metadata.json" in names:
                meta = json.loads(zf.read("metadata.json"))
                names_map = meta.get("names") or {}
                out["names"] = [names_map[k] for k in sorted(names_map, key=int)]
                out |= {k: meta[k] for k in ("imgsz", "stride", "end2end") if k in meta}
            if META_ENTRY in names:
                out |= json.loads(zf.read(META_ENTRY))
    except zipfile.BadZipFile:  # a bare flatbuffer: valid, without metadata
        pass
    return out


class TfliteDetector:
    """One ``.tflite`` detector in a LiteRT CPU interpreter (XNNPACK), ``threads`` threads."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        inp, out = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self._in, self._out = inp["index"], out["index"]
        shape = [int(d) for d in inp["shape"]]
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise ValueError(f"{path}: input shape {shape} is not (1, 3, S, S)")
        self.imgsz = shape[-1]
        self.input_name = str(inp["name"])
        self.metadata = tflite_metadata(path)
        # The int8 file loses Ultralytics' metadata.json; the platform's entry still says.
        e2e = self.metadata.get("end2end", is_end2end_output([int(d) for d in out["shape"]]))
        self.end2end = bool(e2e)

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata.get("names", []))

    def raw(self, blob: np.ndarray) -> np.ndarray:
        """``(4 + nc, anchors)`` or end-to-end ``(k, 6)``, boxes in input pixels, as
        ``OnnxDetector.raw``."""
        self.interpreter.set_tensor(self._in, blob)
        self.interpreter.invoke()
        out = np.array(self.interpreter.get_tensor(self._out)[0], dtype=np.float32)
        if not self.end2end:
            out[:4] *= self.imgsz
        return out

    def detect(
        self, img: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300
    ) -> np.ndarray:
        blob, lb = letterbox(img, self.imgsz)
        return decode(self.raw(blob), lb, self.end2end, conf, iou, max_det)
