import json

import numpy as np
import pytest

from cv_assets.lib.core.metrics import box_iou, evaluate_detections, read_yolo_truth

pytestmark = pytest.mark.unit
# A perfect detector scores 1.0, as in COCO's reference. (Ultralytics' trapezoid over the
# envelope closed at recall 1 with precision 0 reports 0.995.)
PERFECT = 1.0


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


# One 224x224 model input: a 0.05-wide box is 11 px (125 px², small), a 0.6-wide box 134 px
# (18,063 px², large).
SMALL = [0.1, 0.1, 0.15, 0.15]
LARGE = [0.3, 0.3, 0.9, 0.9]


def test_ap_by_size_scores_each_object_in_its_own_range():
    truths = [gt([0, *SMALL], [0, *LARGE])]
    preds = [pr([*LARGE, 0.9, 0])]  # the large object found, the small one missed
    m = evaluate_detections(preds, truths, 1, image_sizes=[(224, 224)])
    assert m.ap_large == pytest.approx(1.0)
    assert m.ap_small == 0.0
    assert m.ap_medium is None  # no object of that size: no AP, as COCO's -1
    assert m.map50 == pytest.approx(51 / 101)  # half the recall: 51 of the 101 recall points


def test_ap_by_size_reads_areas_in_model_input_pixels():
    # At 1280x1280 the 0.05-wide box is 64 px (4,096 px²): a medium object.
    truths = [gt([0, *SMALL], [0, *LARGE])]
    m = evaluate_detections([pr([*LARGE, 0.9, 0])], truths, 1, image_sizes=[(1280, 1280)])
    assert (m.ap_small, m.ap_medium, m.ap_large) == (None, 0.0, pytest.approx(1.0))


def test_a_false_positive_of_another_size_does_not_count_against_small_objects():
    truths = [gt([0, *SMALL])]
    preds = [pr([*LARGE, 0.95, 0], [*SMALL, 0.5, 0])]  # a large false positive ranked first
    m = evaluate_detections(preds, truths, 1, image_sizes=[(224, 224)])
    assert m.ap_small == pytest.approx(1.0)  # COCO ignores unmatched detections out of range
    assert m.map50 == pytest.approx(0.5)  # but over all sizes it is a false positive


def test_summary_reports_size_ap_only_when_image_sizes_are_given():
    truths, preds = [gt([0, *SMALL], [0, *LARGE])], [pr([*LARGE, 0.9, 0])]
    with_sizes = evaluate_detections(preds, truths, 1, image_sizes=[(224, 224)]).summary(["a"])
    assert with_sizes["ap_small"] == 0.0 and with_sizes["ap_large"] == 1.0
    assert "ap_medium" not in with_sizes  # undefined: left out, so every value is a number
    json.dumps(with_sizes)
    without = evaluate_detections(preds, truths, 1)
    assert without.ap_small is None and "ap_small" not in without.summary(["a"])


def test_only_the_100_most_confident_detections_per_image_and_class_count():
    # 100 confident false positives push the one true positive out of the image's top 100.
    fps = [[0.6, 0.6, 0.7, 0.7, 0.9, 0]] * 100
    truths = [gt([0, *LARGE])]
    m = evaluate_detections([pr(*fps, [*LARGE, 0.5, 0])], truths, 1)
    assert m.map50 == 0.0
    assert evaluate_detections([pr(*fps, [*LARGE, 0.5, 0])], truths, 1, max_dets=101).map50 > 0


def test_a_class_without_ground_truth_is_left_out_of_the_mean():
    truths = [gt([0, *LARGE])]
    preds = [pr([*LARGE, 0.9, 0], [*SMALL, 0.8, 1])]  # class 1 has no object, only a detection
    m = evaluate_detections(preds, truths, 2)
    assert m.map50 == pytest.approx(PERFECT) and m.ap50_per_class == pytest.approx([PERFECT, 0])


def test_a_class_id_outside_the_classes_names_the_image():
    with pytest.raises(ValueError, match=r"image 1: prediction class id 3 is outside 0\.\.2"):
        evaluate_detections([pr(), pr([*LARGE, 0.9, 3])], [gt(), gt()], 3)
