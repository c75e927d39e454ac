"""The app's reference pre- and post-processing, and predict's handling of bad files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cv_assets.lib.core.onnx_detect import (
    ImageUnreadable,
    OnnxDetector,
    decode,
    is_end2end_output,
    letterbox,
    nms,
    postprocess,
    postprocess_end2end,
    read_image,
)
from cv_assets_tests.support.models import (
    constant_detector,
    constant_end2end_detector,
    end2end_output,
    head_output,
)

pytestmark = pytest.mark.unit


def test_letterbox_keeps_aspect_and_centres_with_grey_padding():
    img = np.full((100, 200, 3), 255, np.uint8)  # h=100, w=200
    blob, lb = letterbox(img, 64)
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert (lb.gain_x, lb.gain_y, lb.pad_x, lb.pad_y) == (0.32, 0.32, 0, 16)
    assert np.allclose(blob[0, :, :16, :], 114 / 255) and np.allclose(blob[0, :, 48:, :], 114 / 255)
    assert np.allclose(blob[0, :, 16:48, :], 1.0)


def test_letterbox_swaps_bgr_to_rgb():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255  # blue in OpenCV's BGR
    blob, _ = letterbox(img, 8)
    assert blob[0, 2].min() == 1.0 and blob[0, 0].max() == 0.0


def test_postprocess_maps_boxes_back_to_the_original_image():
    _, lb = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    # A box covering x 50..150, y 25..75 of the original sits at x 16..48, y 24..40 in the input.
    out = postprocess(head_output([(32, 32, 32, 16)], [(1, 0.9)]), lb)
    assert out.shape == (1, 6)
    assert np.allclose(out[0, :4], [0.25, 0.25, 0.75, 0.75], atol=1e-6)
    assert out[0, 4] == pytest.approx(0.9) and out[0, 5] == 1


def test_postprocess_suppresses_overlaps_of_one_class_only_and_filters_confidence():
    _, lb = letterbox(np.zeros((64, 64, 3), np.uint8), 64)
    boxes = [(32, 32, 20, 20), (33, 32, 20, 20), (33, 32, 20, 20), (10, 10, 4, 4)]
    scores = [(0, 0.9), (0, 0.8), (2, 0.7), (1, 0.1)]
    out = postprocess(head_output(boxes, scores), lb, conf=0.25)
    assert sorted(out[:, 5].tolist()) == [0, 2]  # the 0.8 duplicate and the 0.1 box are gone
    assert out[:, 4].max() == pytest.approx(0.9)


def test_end2end_rows_above_confidence_are_kept_as_they_are_without_suppression():
    _, lb = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    # Two boxes of one class on one place: a one-to-one head means two objects, NMS would drop one.
    rows = [(16, 24, 48, 40, 0.9, 1), (16, 24, 48, 40, 0.6, 1), (0, 0, 8, 8, 0.2, 2)]
    out = postprocess_end2end(end2end_output(rows), lb, conf=0.25)
    assert out.shape == (2, 6) and out[:, 4].tolist() == pytest.approx([0.9, 0.6])
    # x 16..48, y 24..40 of the input is x 50..150, y 25..75 of the 200x100 original.
    assert np.allclose(out[:, :4], [0.25, 0.25, 0.75, 0.75], atol=1e-6) and set(out[:, 5]) == {1}
    assert len(postprocess_end2end(end2end_output(rows), lb, conf=0.1, max_det=1)) == 1
    assert np.array_equal(decode(end2end_output(rows), lb, True, conf=0.25), out)


def test_the_output_shape_tells_an_end2end_head_from_one_to_many():
    assert is_end2end_output((1, 300, 6)) and is_end2end_output([1, 21, 6])
    # Two classes make 6 rows of a one-to-many output: its anchors are the last axis (>= 21).
    assert not is_end2end_output((1, 6, 8400)) and not is_end2end_output((1, 7, 84))


def test_detector_of_an_end2end_file_reports_its_rows_without_nms(tmp_path):
    for stamped in (True, False):  # Ultralytics' metadata says so; else the shape does
        det = OnnxDetector(constant_end2end_detector(tmp_path / f"{stamped}.onnx", stamped=stamped))
        assert det.end2end and det.imgsz == 32
        out = det.detect(np.zeros((32, 32, 3), np.uint8))
        assert out[:, 5].tolist() == [1, 1] and out[:, 4].tolist() == pytest.approx([0.9, 0.8])
    assert not OnnxDetector(constant_detector(tmp_path / "m.onnx")).end2end


def test_nms_keeps_highest_first_and_disjoint_boxes():
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(b, np.array([0.5, 0.9, 0.4]), 0.5).tolist() == [1, 2]


def test_unreadable_image_error_names_the_file(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    with pytest.raises(ImageUnreadable, match=r"notes\.jpg: not a decodable image"):
        read_image(bad)
    with pytest.raises(ImageUnreadable, match=r"missing\.png: cannot read the file"):
        read_image(tmp_path / "missing.png")


def test_detector_reads_size_and_class_names_from_the_file(tmp_path):
    det = OnnxDetector(constant_detector(tmp_path / "m.onnx"))
    assert det.imgsz == 32 and det.class_names == ["square", "circle", "triangle"]
    out = det.detect(np.zeros((40, 80, 3), np.uint8))
    assert out.shape == (1, 6) and out[0, 5] == 1


def test_predict_reports_bad_files_processes_the_rest_and_exits_nonzero(tmp_path):
    model = constant_detector(tmp_path / "m.onnx")
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 32), (10, 20, 30)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    code = (
        "import sys; from cv_assets.cli import main; rc = main(sys.argv[1:]); "
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH', file=sys.stderr); "
        "sys.exit(rc)"
    )
    args = ["predict", "--model", str(model), str(good), str(bad), str(good)]
    p = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=dict(os.environ)
    )
    assert p.returncode == 1, p.stderr
    assert "bad.jpg: not a decodable image" in p.stderr and "NO_TORCH" in p.stderr
    doc = json.loads(p.stdout)
    ok, err, ok2 = doc["results"]
    assert err["image"] == str(bad) and "not a decodable image" in err["error"]
    for r in (ok, ok2):
        (d,) = r["detections"]
        assert d["class"] == "circle" and d["box_xyxy"] == [16.0, 0.0, 48.0, 32.0]
    only_good = subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", "predict", "--model", str(model), str(good)],
        capture_output=True,
        text=True,
    )
    assert only_good.returncode == 0 and json.loads(only_good.stdout)["results"][0]["detections"]


def test_predict_without_a_champion_says_what_to_do(cfg):
    p = subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", "predict", "x.jpg"], capture_output=True, text=True
    )
    assert p.returncode == 2 and "no champion" in p.stderr and "Traceback" not in p.stderr
