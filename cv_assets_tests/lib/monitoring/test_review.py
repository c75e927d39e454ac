"""The review queue: confident learning (cleanlab ObjectLab) on a champion's boxes.

The "champion" here is a callable that returns boxes chosen by the test: the true boxes with a
high confidence (a perfect model), plus a faint box elsewhere, as a real detector gives at a low
confidence. With such a model a clean batch must queue nothing, and each planted label error must
be found, first, with its kind.
"""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cv_assets.lib.ingest.labels import label_table, parse_label_file, validate_labels
from cv_assets.lib.monitoring.label_issues import (
    Disagreement,
    IssueSettings,
    calibrated_threshold,
    detection_hits,
    find_label_issues,
)
from cv_assets.lib.monitoring.review import (
    LABEL_COLOR,
    PRED_COLOR,
    QUEUE_COLUMNS,
    ReviewSettings,
    build_queue,
    crop_png,
    predictions_text,
    thumbnail_png,
)

pytestmark = pytest.mark.unit
CLASSES = ["square", "circle", "triangle"]
SIZE = (320, 240)
FAINT = (0.9, 0.02, 0.98, 0.1, 0.03, 1.0)  # a faint detection in a corner no object is in


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


def scene(color: tuple[int, int, int], size: tuple[int, int] = SIZE) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def label_text(t: np.ndarray) -> bytes:
    lines = [
        f"{int(c)} {(a + b) / 2:.6f} {(d + e) / 2:.6f} {b - a:.6f} {e - d:.6f}\n"
        for c, a, d, b, e in t
    ]
    return "".join(lines).encode()


def objects(n: int = 24) -> list[np.ndarray]:
    """What is really in ``n`` images: three objects each, classes and sizes varying."""
    return [
        truth(
            (i % 3, 0.2, 0.3, 0.16 + 0.01 * (i % 4), 0.2),
            ((i + 1) % 3, 0.55, 0.6, 0.2, 0.18 + 0.01 * (i % 3)),
            ((i + 2) % 3, 0.8, 0.35, 0.12, 0.16),
        )
        for i in range(n)
    ]


def perfect(real: list[np.ndarray], conf: float = 0.9) -> dict[str, np.ndarray]:
    """A champion that sees every object, with class and box right, and one faint false box."""
    return {
        f"{i}.jpg": np.vstack([[(*r[1:5], conf, r[0]) for r in t], [FAINT]])
        for i, t in enumerate(real)
    }


def queue(labels: list[np.ndarray], detections: dict[str, np.ndarray], **kw):
    files = {}
    for i, t in enumerate(labels):
        files[f"{i}.jpg"] = scene((40 + 10 * i, 90, 120))
        files[f"{i}.txt"] = label_text(t)
    n = len(labels)
    samples = pd.DataFrame(
        {
            "stem": [str(i) for i in range(n)],
            "sha256": [f"{i:064d}" for i in range(n)],
            "source": [f"images/{i}.jpg" for i in range(n)],
            "image_uri": [f"{i}.jpg" for i in range(n)],
            "label_uri": [f"{i}.txt" for i in range(n)],
        }
    )
    return build_queue(samples, files.__getitem__, lambda u, _d: detections[u], CLASSES, **kw)


def test_clean_labels_and_a_champion_that_sees_them_queue_nothing():
    real = objects()
    q = queue(real, perfect(real))
    assert list(q.table.columns) == QUEUE_COLUMNS and len(q.table) == 0
    assert q.images == 24 and q.found == 0 and q.flagged == 0
    # Confident from the champion's 0.9 (where it is right); the faint box is no evidence.
    assert q.conf_min == pytest.approx(0.9)


def plant(kind: str, real: list[np.ndarray]) -> tuple[list[np.ndarray], int | None]:
    """The labels with one error of ``kind`` in image 5; the line it is on (None: removed)."""
    labels = [t.copy() for t in real]
    t = labels[5]
    if kind == "class_mismatch":
        t[1, 0] = (t[1, 0] + 1) % 3
        return labels, 2
    if kind == "low_iou":
        t[1, [1, 3]] += 0.5 * (t[1, 3] - t[1, 1])  # half a box to the right: IoU 1/3
        return labels, 2
    if kind == "missing_label":
        labels[5] = np.delete(t, 1, axis=0)
        return labels, None
    labels[5] = np.vstack([t, [0, 0.3, 0.75, 0.4, 0.9]])  # nothing there
    return labels, 4


@pytest.mark.parametrize("kind", ["class_mismatch", "low_iou", "missing_label", "extra_label"])
def test_a_planted_label_error_is_the_one_item_with_its_kind(kind):
    real = objects()
    labels, line = plant(kind, real)
    q = queue(labels, perfect(real))
    assert q.flagged == 1 and q.found == 1
    (item,) = q.table.to_dict("records")
    assert (item["rank"], item["kind"], item["stem"], item["label_line"]) == (1, kind, "5", line)
    assert q.counts[kind] == 1 and sum(q.counts.values()) == 1
    assert 0.5 <= item["score"] <= 1
    if kind in ("class_mismatch", "missing_label"):
        # The champion's box on the object is what the reviewer sees, with its class.
        cls = int(real[5][1, 0])
        assert item["pred_class"] == CLASSES[cls] and item["pred_conf"] == pytest.approx(0.9)
        assert CLASSES[cls] in item["details"]
    if kind == "low_iou":
        assert item["iou"] == pytest.approx(1 / 3, abs=0.01)


def test_errors_of_every_kind_are_ranked_by_cleanlab_severity_with_a_crop_each():
    real = objects()
    labels = [t.copy() for t in real]
    kinds = ("class_mismatch", "low_iou", "missing_label", "extra_label")
    for i, kind in zip((2, 5, 8, 11), kinds, strict=True):
        labels[i] = plant(kind, [real[i]] * 6)[0][5]
    q = queue(labels, perfect(real))
    t = q.table
    assert sorted(zip(t["stem"], t["kind"], strict=True)) == [
        ("11", "extra_label"),
        ("2", "class_mismatch"),
        ("5", "low_iou"),
        ("8", "missing_label"),
    ]
    assert t["rank"].tolist() == [1, 2, 3, 4] and t["score"].is_monotonic_decreasing
    # A badly drawn box (quality ~0.33) is the least certain of the four.
    assert t["kind"].iloc[-1] == "low_iou"
    assert t["crop"].tolist() == [f"{r}_{s}.png" for r, s in zip(t["rank"], t["stem"], strict=True)]
    assert len(q.crops) == 4 and all(Image.open(io.BytesIO(c)).size == (128, 128) for c in q.crops)
    # The suggestion is every confident champion box; the faint one is left out.
    suggested = t.loc[t["stem"] == "8", "predictions"].item().splitlines()
    assert len(suggested) == 3
    capped = queue(labels, perfect(real), max_items=2)
    assert capped.table["rank"].tolist() == [1, 2] and capped.found == 4


def test_a_weak_champion_gives_no_confident_evidence_and_queues_no_flip_or_missed_box():
    real = objects()
    labels, _ = plant("class_mismatch", real)
    labels[8] = np.delete(labels[8], 0, axis=0)
    # Right on half the objects only, with the other half's class wrong: never 95% precise.
    weak = {
        f"{i}.jpg": np.array([(*r[1:5], 0.6, (r[0] + (i + j) % 2) % 3) for j, r in enumerate(t)])
        for i, t in enumerate(real)
    }
    q = queue(labels, weak)
    assert q.conf_min > 1 and q.counts["class_mismatch"] == q.counts["missing_label"] == 0
    # Told from which confidence it is to be believed, the same champion's flips are queued.
    told = queue(labels, weak, settings=ReviewSettings(conf_min=0.6))
    assert told.counts["class_mismatch"] > 0 and told.counts["missing_label"] == 1


def test_the_confident_threshold_is_where_the_champion_is_right_90_percent_of_the_time():
    t = [truth((0, 0.2, 0.2, 0.2, 0.2), (1, 0.7, 0.7, 0.2, 0.2))] * 10
    right = preds((0, 0.8, 0.2, 0.2, 0.2, 0.2), (1, 0.4, 0.7, 0.7, 0.2, 0.2))
    wrong = preds((2, 0.3, 0.5, 0.5, 0.1, 0.1))  # nothing there
    p = [np.vstack([right, wrong])] * 10
    conf, hit = detection_hits(t, p)
    assert (
        sorted(zip(conf.round(2), hit, strict=True))
        == [(0.3, 0)] * 10 + [(0.4, 1)] * 10 + [(0.8, 1)] * 10
    )
    # Right at 0.8 and 0.4 every time, never at 0.3.
    assert calibrated_threshold(t, p, 0.9) == pytest.approx(0.4)
    # Half the boxes at 0.4 wrong (another class): from 0.4 on it is right 75% of the time.
    half = [
        np.vstack([right, wrong])
        if i % 2
        else np.vstack([right[:1], preds((2, 0.4, 0.7, 0.7, 0.2, 0.2)), wrong])
        for i in range(10)
    ]
    assert calibrated_threshold(t, half, 0.9) == pytest.approx(0.8)
    assert calibrated_threshold(t, [right[:0]] * 10, 0.5) > 1  # no detections: never
    # Ties share one fate: 1 right and 1 wrong at the same confidence is 50% right.
    tie = [preds((0, 0.9, 0.2, 0.2, 0.2, 0.2), (2, 0.9, 0.5, 0.5, 0.1, 0.1))]
    assert calibrated_threshold(t[:1], tie, 0.9) > 1


def test_cleanlab_reads_boxes_in_pixels_and_rates_each_image():
    real = objects(4)
    labels = [t.copy() for t in real]
    labels[1][0, 0] = (labels[1][0, 0] + 1) % 3
    det = list(perfect(real).values())
    res = find_label_issues(labels, det, [SIZE] * 4, 3, IssueSettings(conf_min=0.9))
    assert res.flagged == [1] and res.quality[1] < 0.5 < min(res.quality[[0, 2, 3]])
    # The same labels at a tenth of the size: cleanlab's centre distance is in pixels, and the
    # verdict does not depend on it.
    small = find_label_issues(labels, det, [(32, 24)] * 4, 3, IssueSettings(conf_min=0.9))
    assert small.flagged == [1]


def test_crop_is_a_square_png_with_label_and_prediction_drawn():
    d = Disagreement(
        "class_mismatch",
        0.9,
        0.8,
        label_line=1,
        label_class=0,
        label_box=(0.4, 0.4, 0.6, 0.6),
        pred_class=1,
        pred_conf=0.9,
        pred_box=(0.42, 0.4, 0.62, 0.6),
    )
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
