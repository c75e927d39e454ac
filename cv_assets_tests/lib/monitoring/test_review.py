import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cv_assets.lib.ingest.labels import label_table, parse_label_file, validate_labels
from cv_assets.lib.monitoring.review import (
    LABEL_COLOR,
    PRED_COLOR,
    QUEUE_COLUMNS,
    ReviewSettings,
    build_queue,
    crop_png,
    find_disagreements,
    predictions_text,
    thumbnail_png,
)

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]


def truth(*boxes: tuple[int, float, float, float, float]) -> np.ndarray:
    """Label rows ``(cls, cx, cy, w, h)`` as ``read_yolo_truth`` returns them."""
    rows = [(c, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for c, cx, cy, w, h in boxes]
    return np.array(rows, dtype=float).reshape(-1, 5)


def preds(*boxes: tuple[int, float, float, float, float, float]) -> np.ndarray:
    """Detections ``(cls, conf, cx, cy, w, h)`` as ``OnnxDetector.detect`` returns them."""
    rows = [
        (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, conf, c) for c, conf, cx, cy, w, h in boxes
    ]
    return np.array(rows, dtype=float).reshape(-1, 6)


def test_confident_prediction_where_no_label_box_is_is_a_missing_label():
    (d,) = find_disagreements(
        truth((0, 0.2, 0.2, 0.2, 0.2)),
        preds(
            (0, 0.95, 0.2, 0.2, 0.2, 0.2),  # agrees with the label
            (1, 0.8, 0.75, 0.75, 0.2, 0.2),  # nothing labelled there
        ),
    )
    assert d.kind == "missing_label" and d.label_line is None
    assert d.pred_class == 1 and d.score == pytest.approx(0.8)  # conf * (1 - IoU 0)


def test_same_class_prediction_at_low_iou_is_a_badly_drawn_box():
    # The label is shifted half a box left of what the champion sees: IoU 1/3.
    (d,) = find_disagreements(truth((2, 0.4, 0.5, 0.2, 0.4)), preds((2, 0.9, 0.5, 0.5, 0.2, 0.4)))
    assert d.kind == "low_iou" and d.label_line == 1 and d.label_class == 2
    assert d.iou == pytest.approx(1 / 3, abs=1e-6)
    assert d.score == pytest.approx(0.9 * (1 - 1 / 3), abs=1e-6)


def test_confident_prediction_of_another_class_on_the_box_is_a_class_mismatch():
    (d,) = find_disagreements(
        truth((0, 0.5, 0.5, 0.3, 0.3), (1, 0.2, 0.2, 0.1, 0.1)),
        preds((2, 0.9, 0.5, 0.5, 0.3, 0.3), (1, 0.9, 0.2, 0.2, 0.1, 0.1)),
    )
    assert d.kind == "class_mismatch" and d.label_line == 1
    assert (d.label_class, d.pred_class) == (0, 2)
    assert d.score == pytest.approx(0.9)  # conf * IoU 1


def test_a_label_box_gives_one_item_and_class_mismatch_wins_over_low_iou():
    found = find_disagreements(
        truth((0, 0.5, 0.5, 0.3, 0.3)),
        preds((0, 0.9, 0.6, 0.5, 0.3, 0.3), (1, 0.7, 0.5, 0.5, 0.3, 0.3)),
    )
    assert [d.kind for d in found] == ["class_mismatch"]


def test_agreeing_boxes_and_unconfident_predictions_give_nothing():
    labels = truth((0, 0.3, 0.3, 0.2, 0.2), (1, 0.7, 0.7, 0.2, 0.2))
    agreeing = preds(
        (0, 0.9, 0.31, 0.3, 0.2, 0.2),
        (1, 0.8, 0.7, 0.69, 0.21, 0.2),
        # A second, other-class box on an object the champion also sees correctly is no evidence.
        (2, 0.6, 0.3, 0.3, 0.2, 0.2),
        # Unconfident: below conf_min, whatever it says.
        (2, 0.3, 0.9, 0.1, 0.1, 0.1),
        (1, 0.49, 0.3, 0.3, 0.2, 0.2),
    )
    assert find_disagreements(labels, agreeing) == []
    assert find_disagreements(truth(), preds()) == []
    # A label the champion does not see at all is the model's miss, not queued.
    assert find_disagreements(labels, preds()) == []


def test_thresholds_come_from_the_settings():
    labels, p = truth((0, 0.4, 0.5, 0.2, 0.4)), preds((0, 0.3, 0.5, 0.5, 0.2, 0.4))
    assert find_disagreements(labels, p) == []
    (d,) = find_disagreements(labels, p, ReviewSettings(conf_min=0.25))
    assert d.kind == "low_iou"
    assert find_disagreements(labels, p, ReviewSettings(conf_min=0.25, iou_ok=0.3)) == []


def scene(color: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_queue_ranks_every_batch_item_by_severity_with_a_crop_each():
    files = {
        "a.jpg": scene((90, 90, 90)),
        "a.txt": b"0 0.500000 0.500000 0.300000 0.300000\n",
        "b.jpg": scene((40, 40, 40)),
        "b.txt": b"1 0.200000 0.200000 0.200000 0.200000\n",
        "c.jpg": scene((200, 200, 200)),
        "c.txt": b"2 0.500000 0.500000 0.400000 0.400000\n",
    }
    detections = {
        "a.jpg": preds((2, 0.6, 0.5, 0.5, 0.3, 0.3)),  # class mismatch, score 0.6
        "b.jpg": preds((1, 0.9, 0.2, 0.2, 0.2, 0.2), (0, 0.95, 0.8, 0.8, 0.1, 0.1)),  # 0.95
        "c.jpg": preds((2, 0.99, 0.5, 0.5, 0.4, 0.4)),  # agrees
    }
    samples = pd.DataFrame(
        {
            "stem": ["a", "b", "c"],
            "sha256": ["1" * 64, "2" * 64, "3" * 64],
            "source": ["images/a.jpg", "images/b.png", "images/c.jpg"],
            "image_uri": ["a.jpg", "b.jpg", "c.jpg"],
            "label_uri": ["a.txt", "b.txt", "c.txt"],
        }
    )
    q = build_queue(samples, files.__getitem__, lambda uri, _data: detections[uri], CLASSES)
    t = q.table
    assert list(t.columns) == QUEUE_COLUMNS and q.images == 3 and q.found == 2
    assert t[["rank", "kind", "stem"]].values.tolist() == [
        [1, "missing_label", "b"],
        [2, "class_mismatch", "a"],
    ]
    assert q.counts == {"missing_label": 1, "low_iou": 0, "class_mismatch": 1}
    assert t["score"].tolist() == [0.95, 0.6] and t["crop"].tolist() == ["1_b.png", "2_a.png"]
    assert "square" in t.loc[1, "details"] and "triangle" in t.loc[1, "details"]
    assert t.loc[1, "label_box"] == "0.500000 0.500000 0.300000 0.300000"
    # The suggestion for b is every confident detection, most confident first.
    assert t.loc[0, "predictions"].splitlines()[0].startswith("0 0.800000 0.800000")
    assert len(q.crops) == 2 and all(Image.open(io.BytesIO(c)).size == (128, 128) for c in q.crops)
    capped = build_queue(
        samples, files.__getitem__, lambda u, _d: detections[u], CLASSES, max_items=1
    )
    assert capped.table["stem"].tolist() == ["b"] and capped.found == 2


def test_crop_is_a_square_png_with_label_and_prediction_drawn():
    (d,) = find_disagreements(truth((0, 0.5, 0.5, 0.2, 0.2)), preds((1, 0.9, 0.52, 0.5, 0.2, 0.2)))
    png = crop_png(
        Image.open(io.BytesIO(scene((128, 128, 128), (200, 100)))),
        d,
        "x",
        ReviewSettings(crop_size=96),
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size == (96, 96)
    colors = {c for _, c in img.getcolors(96 * 96) or []}
    assert LABEL_COLOR in colors and PRED_COLOR in colors
    thumb = Image.open(io.BytesIO(thumbnail_png(png, side=48)))
    assert thumb.size == (48, 48) and len(thumbnail_png(png)) < 12_000


def test_predictions_text_is_a_label_file_the_platform_accepts():
    text = predictions_text(preds((1, 0.6, 0.5, 0.5, 0.2, 0.2), (0, 0.9, 0.95, 0.5, 0.2, 0.2)))
    lines = text.splitlines()
    assert lines[0].startswith("0 ") and len(lines) == 2  # most confident first
    assert lines[0].split()[1] == "0.925000"  # clipped to the image
    f = parse_label_file("labels/x.txt", text.encode())
    assert validate_labels(label_table([f]), CLASSES) == []
