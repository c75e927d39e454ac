"""YOLO26 (an end-to-end head) through the whole training job: every app file proven, and a
manifest whose contract tells the app that the output is final detections, with no NMS to run."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cv_assets.cli.predict import predict
from cv_assets.cli.status import collect_status
from cv_assets.client.detections import decode_output
from cv_assets.client.release_client import ReleaseClient
from cv_assets.lib.core.onnx_detect import OnnxDetector, letterbox, open_detector, read_image
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile import releases
from cv_assets.lib.mobile.export import HEAD_CONV_BRANCH, head_float_nodes
from cv_assets.read_side import open_store
from cv_assets.resources.io_manager import record_key
from cv_assets_tests.support.jobs import check_named, train
from cv_assets_tests.support.release_server import ReleaseServer

pytestmark = pytest.mark.slow

# 8^2 + 4^2 + 2^2 anchors at imgsz 64: the head's top-k returns all of them (k = min(300, 84)).
ROWS = 84
# YOLO26n's int8 ONNX file is 0.311x its fp32 file with every weight in int8 (YOLO11n: 0.297x):
# the rest is the QDQ graph's nodes (README, "Mobile files"). The default budget is 0.3.
INT8_SIZE = 0.32


def test_a_yolo26_champion_ships_end_to_end_files_and_a_contract_without_nms(
    small_home, instance, monkeypatch, tmp_path
):
    private, public = ch.generate_key()
    key = tmp_path / "release.pem"
    key.write_bytes(private)
    monkeypatch.setenv("CV_ASSETS_RELEASE_KEY_FILE", str(key))
    cfg = dataclasses.replace(PlatformConfig.from_env(), phone_files=True)
    result = train(cfg, instance, {"model_yaml": "yolo26n.yaml"},
                   mobile={"int8_max_size_ratio": INT8_SIZE})  # fmt: skip
    assert result.success
    for check in ("onnx_parity_ok", "int8_parity_ok", "platform_files_ok"):
        assert check_named(result, check).passed, check
    champ = collect_status(cfg)["champion"]
    parity = champ["mobile_parity"]
    assert champ["app_format"] == "onnx_int8" and all(p["passed"] for p in parity.values())
    for fmt in ("onnx_fp32", "ort", "tflite"):
        assert parity[fmt]["check"] == "parity" and abs(parity[fmt]["delta_map50_95"]) <= 0.005
    # Core ML: the ML program alone (no Apple NMS pipeline), its one output the detections.
    rec = json.loads((Path(cfg.artifacts_root) / record_key("mobile_model", None)).read_text())
    ios = rec["summary"]["files"]["mlpackage"]
    assert ios["check"] == "structural" and ios["passed"]
    assert any(r.startswith("an ML program without Apple's NMS") for r in ios["reasons"])
    assert any(f"one output 'detections' of shape (1, {ROWS}, 6)" in r for r in ios["reasons"])
    # Every file holds the one-to-one head's final detections, and says so.
    onnx = Path(champ["onnx_uri"])
    for uri in ("onnx_uri", "onnx_int8_uri", "ort_uri", "tflite_uri", "tflite_int8_uri"):
        det = open_detector(champ[uri])
        assert det.end2end and det.raw(np.zeros((1, 3, 64, 64), np.float32)).shape == (ROWS, 6)
    # int8: the head's convolutions are quantized; its decoding and top-k stay in float.
    kept = head_float_nodes(onnx)
    assert any("TopK" in n for n in kept) and not any(HEAD_CONV_BRANCH.search(n) for n in kept)
    card = Path(champ["model_card_uri"]).read_text()
    assert "**end-to-end**" in card and "No NMS in the app" in card and f"(1, {ROWS}, 6)" in card

    # The beta manifest's contract says final detections, no NMS; the phone files' io agrees.
    store = open_store(cfg)
    published = releases.current(store, "beta")
    assert published is not None
    m = ch.verify(published, ch.load_public_key(public))
    out, post = m["contract"]["output"], m["contract"]["postprocess"]
    assert out["end_to_end"] and out["shape"] == [1, ROWS, 6] and post["nms"] is None
    shipped = {f["format"]: f for f in m["files"]}
    assert shipped["tflite_int8"]["io"]["output"]["end_to_end"]
    assert shipped["mlpackage"]["io"]["output"]["name"] == "detections"

    # An app installs the ONNX file and decodes its output by the contract into boxes: those the
    # platform's own detector finds.
    root = store.local_path(releases.ROOT.rstrip("/"))
    assert root is not None
    server = ReleaseServer(root)
    server.start()
    try:
        app = ReleaseClient(server.url, public, "onnx", ("onnx_int8",), "1.0.0", "install-1",
                            tmp_path / "app", channel="beta")  # fmt: skip
        got = app.update()
    finally:
        server.stop()
    assert got.status == "installed" and got.model_path is not None, got
    scene = next(Path(cfg.landing_root).glob("*/images/*.jpg"))
    img = read_image(scene)
    det = OnnxDetector(got.model_path)
    blob, lb = letterbox(img, det.imgsz)
    raw = np.asarray(det.session.run(None, {det.input_name: blob})[0])
    boxes = decode_output(raw, m["contract"], lb, file=shipped["onnx_int8"], conf=1e-6)
    assert len(boxes) > 0 and ((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1)).all()
    assert set(boxes[:, 5].astype(int)) <= {0, 1, 2}
    assert np.allclose(boxes, det.detect(img, conf=1e-6), atol=1e-6)
    # `cv-assets predict` on the champion's app file: the same detections, no NMS either.
    doc, failed = predict("champion", [str(scene)], "onnx_int8", 1e-6, 0.7, cfg)
    assert failed == 0 and len(doc["results"][0]["detections"]) == len(boxes)
