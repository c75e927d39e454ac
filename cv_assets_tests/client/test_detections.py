"""The reference decoding of a model's output: the manifest's contract alone says how."""

from __future__ import annotations

import numpy as np
import pytest

from cv_assets.client.detections import OutputMismatch, decode_output
from cv_assets.lib.core.onnx_detect import letterbox
from cv_assets.lib.mobile.contract import file_io, io_contract
from cv_assets_tests.support.models import end2end_output, head_output

pytestmark = pytest.mark.unit

CLASSES = ["square", "circle", "triangle"]
# A 200x100 frame letterboxed to 64: x 16..48, y 24..40 of the input is x 50..150, y 25..75.
LB = letterbox(np.zeros((100, 200, 3), np.uint8), 64)[1]


def test_an_end_to_end_output_is_decoded_without_nms_by_its_contract():
    contract = io_contract(64, CLASSES, end2end=True)
    rows = [(16, 24, 48, 40, 0.9, 2), (16, 24, 48, 40, 0.7, 2), (0, 0, 4, 4, 0.1, 0)]
    out = decode_output(end2end_output(rows, k=84)[None], contract, LB)
    assert out[:, 5].tolist() == [2, 2] and out[:, 4].tolist() == pytest.approx([0.9, 0.7])
    assert np.allclose(out[:, :4], [0.25, 0.25, 0.75, 0.75], atol=1e-6)
    assert len(decode_output(end2end_output(rows, k=84)[None], contract, LB, conf=0.8)) == 1
    # The LiteRT file's io says its boxes are in pixels too: the same detections.
    lite = {"format": "tflite"} | file_io("tflite", 64, CLASSES, end2end=True)
    same = decode_output(end2end_output(rows, k=84)[None], contract, LB, file=lite)
    assert np.array_equal(same, out)


def test_a_one_to_many_output_gets_the_contracts_class_wise_nms_and_box_scale():
    contract = io_contract(64, CLASSES)
    boxes = [(32, 32, 32, 16), (33, 32, 32, 16), (33, 32, 32, 16)]
    raw = np.zeros((1, 7, 84), np.float32)
    raw[0, :, :3] = head_output(boxes, [(1, 0.9), (1, 0.8), (0, 0.7)])
    out = decode_output(raw, contract, LB)
    assert sorted(out[:, 5].tolist()) == [0, 1]  # the second circle overlapped the first
    assert np.allclose(out[out[:, 5] == 1, :4], [0.25, 0.25, 0.75, 0.75], atol=1e-6)
    # LiteRT's one-to-many file gives fractions of the input side; its io says to scale by 64.
    lite = file_io("tflite", 64, CLASSES)
    raw[0, :4] /= 64
    assert np.allclose(decode_output(raw, contract, LB, file=lite), out, atol=1e-5)


def test_an_output_that_is_not_the_contracts_is_refused_naming_both_shapes():
    with pytest.raises(OutputMismatch, match=r"shape \[1, 7, 84\], the contract says \[1, 84, 6\]"):
        decode_output(np.zeros((1, 7, 84)), io_contract(64, CLASSES, end2end=True), LB)
