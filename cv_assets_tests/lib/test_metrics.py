import numpy as np
import pytest

from cv_assets.lib.metrics import box_iou, evaluate_detections, read_yolo_truth

pytestmark = pytest.mark.unit
# A perfect detector scores 0.995, not 1.0: the 101-point COCO/Ultralytics interpolation closes
# the precision envelope at recall 1 with precision 0. Same number Ultralytics reports.
PERFECT = 0.995


def gt(*boxes):
    return np.array(boxes, dtype=float).reshape(-1, 5)


def pr(*boxes):
    return np.array(boxes, dtype=float).reshape(-1, 6)


def test_perfect_predictions_score_one():
    truths = [gt([0, 0.1, 0.1, 0.3, 0.3], [1, 0.5, 0.5, 0.9, 0.8]), gt([2, 0.2, 0.2, 0.4, 0.6])]
    preds = [
        pr([0.1, 0.1, 0.3, 0.3, 0.9, 0], [0.5, 0.5, 0.9, 0.8, 0.8, 1]),
        pr([0.2, 0.2, 0.4, 0.6, 0.95, 2]),
    ]
    m = evaluate_detections(preds, truths, 3)
    assert m.map50 == pytest.approx(PERFECT, abs=1e-3)
    assert m.map50_95 == pytest.approx(PERFECT, abs=1e-3)
    assert m.precision == pytest.approx(1.0, abs=1e-3) and m.recall == pytest.approx(1.0, abs=1e-3)
    assert np.diag(m.confusion)[:3].tolist() == [1, 1, 1]


def test_no_predictions_score_zero_and_count_misses():
    m = evaluate_detections([pr()], [gt([0, 0.1, 0.1, 0.3, 0.3])], 3)
    assert m.map50 == 0 and m.recall == 0
    assert m.confusion[3, 0] == 1  # missed: predicted background, true class 0


def test_wrong_class_is_not_a_true_positive():
    m = evaluate_detections([pr([0.1, 0.1, 0.3, 0.3, 0.9, 1])], [gt([0, 0.1, 0.1, 0.3, 0.3])], 3)
    assert m.map50 == 0
    assert m.confusion[1, 0] == 1


def test_loose_box_counts_at_iou_50_but_not_at_95():
    # IoU of these two boxes is 0.64: a hit at 0.50..0.60, a miss above.
    m = evaluate_detections([pr([0.1, 0.1, 0.5, 0.5, 0.9, 0])], [gt([0, 0.1, 0.1, 0.5, 0.356])], 1)
    assert m.map50 == pytest.approx(PERFECT, abs=1e-3)
    assert m.map50_95 == pytest.approx(PERFECT * 3 / 10, abs=1e-3)  # hits at .50, .55, .60


def test_duplicate_detection_is_a_false_positive():
    truths = [gt([0, 0.1, 0.1, 0.3, 0.3])]
    preds = [pr([0.1, 0.1, 0.3, 0.3, 0.9, 0], [0.1, 0.1, 0.3, 0.3, 0.8, 0])]
    m = evaluate_detections(preds, truths, 1)
    assert m.map50 == pytest.approx(PERFECT, abs=1e-3)  # the best-ranked hit comes first
    assert m.confusion[0, 1] == 1  # the duplicate is a false positive


def test_ranking_matters_false_positive_ranked_first_lowers_ap():
    truths = [gt([0, 0.1, 0.1, 0.3, 0.3]), gt([0, 0.6, 0.6, 0.8, 0.8])]
    good = [
        pr([0.1, 0.1, 0.3, 0.3, 0.9, 0]),
        pr([0.6, 0.6, 0.8, 0.8, 0.8, 0], [0, 0, 0.05, 0.05, 0.1, 0]),
    ]
    bad = [
        pr([0.1, 0.1, 0.3, 0.3, 0.5, 0]),
        pr([0.6, 0.6, 0.8, 0.8, 0.4, 0], [0, 0, 0.05, 0.05, 0.9, 0]),
    ]
    assert evaluate_detections(good, truths, 1).map50 > evaluate_detections(bad, truths, 1).map50


def test_iou_and_truth_parsing():
    assert box_iou(np.array([[0, 0, 1, 1.0]]), np.array([[0, 0, 0.5, 1.0]]))[0, 0] == pytest.approx(
        0.5
    )
    t = read_yolo_truth("1 0.5 0.5 0.2 0.4\n\n")
    assert np.allclose(t, [[1, 0.4, 0.3, 0.6, 0.7]])
    assert read_yolo_truth("").shape == (0, 5)
