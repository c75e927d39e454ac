import json

import numpy as np
import pytest

from cv_assets.lib.core.metrics import average_precision, evaluate_detections, match_detections
from cv_assets.lib.training.bootstrap import metric_interval, paired_bootstrap

pytestmark = pytest.mark.unit

N_CLASSES = 3


def scenes(seed: int, n_images: int) -> list[np.ndarray]:
    """Ground truth of a test set: 0-4 objects per image, 10-40% of the image wide."""
    rng = np.random.default_rng(seed)
    truths = []
    for _ in range(n_images):
        n = int(rng.integers(0, 5))
        wh = rng.uniform(0.1, 0.4, (n, 2))
        xy = rng.uniform(0, 1 - wh)
        truths.append(np.column_stack([rng.integers(0, N_CLASSES, n), xy, xy + wh]))
    return truths


def sure(truths: list[np.ndarray]) -> list[np.ndarray]:
    """A model that finds every object exactly, with high confidence."""
    return [np.column_stack([t[:, 1:5], np.full(len(t), 0.95), t[:, 0]]) for t in truths]


def noisy(truths: list[np.ndarray], seed: int, jitter: float = 0.1) -> list[np.ndarray]:
    """A model that misses a fifth of the objects, jitters the rest and adds false positives."""
    rng = np.random.default_rng(seed)
    preds = []
    for t in truths:
        found = t[rng.random(len(t)) > 0.2]
        size = np.tile(found[:, 3:5] - found[:, 1:3], 2)
        boxes = found[:, 1:5] + rng.normal(0, jitter, (len(found), 4)) * size
        hits = np.column_stack([boxes, rng.uniform(0.3, 1, len(found)), found[:, 0]])
        k = rng.poisson(0.5)
        xy = rng.uniform(0, 0.7, (k, 2))
        fps = np.column_stack([xy, xy + 0.2, rng.uniform(0, 0.6, k), rng.integers(0, 3, k)])
        preds.append(np.vstack([hits, fps]))
    return preds


def test_identical_models_differ_by_exactly_zero():
    truths = scenes(0, 80)
    preds = noisy(truths, 1)
    r = paired_bootstrap(preds, preds, truths, N_CLASSES, n_resamples=200)
    assert r.delta == 0.0 and r.low == 0.0 and r.high == 0.0
    assert r.n_images == 80 and r.n_resamples == 200 and r.confidence == 0.95


def test_a_clearly_better_model_has_an_interval_above_zero():
    truths = scenes(2, 80)
    better, worse = sure(truths), noisy(truths, 3)
    r = paired_bootstrap(better, worse, truths, N_CLASSES)
    assert 0 < r.low <= r.delta <= r.high
    reverse = paired_bootstrap(worse, better, truths, N_CLASSES)
    assert reverse.high < 0 and reverse.delta == pytest.approx(-r.delta)


def test_delta_is_the_difference_evaluate_detections_reports():
    truths = scenes(4, 60)
    a, b = noisy(truths, 5, jitter=0.05), noisy(truths, 6)
    r = paired_bootstrap(a, b, truths, N_CLASSES, n_resamples=50)
    ma, mb = evaluate_detections(a, truths, N_CLASSES), evaluate_detections(b, truths, N_CLASSES)
    assert r.delta == pytest.approx(ma.map50_95 - mb.map50_95, abs=1e-12)


def test_the_same_seed_draws_the_same_interval():
    truths = scenes(7, 60)
    a, b = noisy(truths, 8), noisy(truths, 9)
    first = paired_bootstrap(a, b, truths, N_CLASSES, n_resamples=300, seed=11)
    assert paired_bootstrap(a, b, truths, N_CLASSES, n_resamples=300, seed=11) == first
    other = paired_bootstrap(a, b, truths, N_CLASSES, n_resamples=300, seed=12)
    assert (other.low, other.high) != (first.low, first.high) and other.delta == first.delta


def test_the_interval_narrows_with_more_images():
    def width(n_images: int) -> float:
        truths = scenes(13, n_images)
        a, b = noisy(truths, 14, jitter=0.05), noisy(truths, 15)
        r = paired_bootstrap(a, b, truths, N_CLASSES, n_resamples=400)
        return r.high - r.low

    # The standard error shrinks as 1/sqrt(n): ten times the images, about a third the width.
    assert width(400) < 0.6 * width(40)


def test_a_resample_scores_like_the_images_repeated():
    truths = scenes(16, 30)
    preds = noisy(truths, 17)
    counts = np.random.default_rng(18).multinomial(30, np.full(30, 1 / 30))
    repeated = np.repeat(np.arange(30), counts)
    weighted = average_precision(match_detections(preds, truths, N_CLASSES), weights=counts[None])
    again = match_detections([preds[i] for i in repeated], [truths[i] for i in repeated], N_CLASSES)
    assert np.allclose(weighted[0], average_precision(again), atol=1e-12, equal_nan=True)


def test_the_result_is_a_json_record():
    truths = scenes(19, 40)
    r = paired_bootstrap(noisy(truths, 20), noisy(truths, 21), truths, N_CLASSES, n_resamples=50)
    record = json.loads(json.dumps(r.as_dict()))
    assert record["metric"] == "map50_95" and record["low"] <= record["high"]
    fields = {"delta", "low", "high", "n_images", "n_resamples", "confidence", "metric"}
    assert set(record) == fields


def test_ap_by_size_can_be_bootstrapped_with_image_sizes_only():
    truths = scenes(22, 40)
    a, b = sure(truths), noisy(truths, 23)
    with pytest.raises(ValueError, match="metric ap_large needs image_sizes"):
        paired_bootstrap(a, b, truths, N_CLASSES, metric="ap_large")
    sizes = [(320.0, 320.0)] * 40  # objects 32-128 px wide: medium and large
    r = paired_bootstrap(a, b, truths, N_CLASSES, image_sizes=sizes, metric="ap_large")
    m = evaluate_detections(a, truths, N_CLASSES, image_sizes=sizes)
    n = evaluate_detections(b, truths, N_CLASSES, image_sizes=sizes)
    assert m.ap_large is not None and n.ap_large is not None
    assert r.delta == pytest.approx(m.ap_large - n.ap_large) and r.low > 0


def test_models_scored_on_different_images_are_refused():
    truths = scenes(24, 10)
    with pytest.raises(ValueError, match="10 and 9 prediction arrays for 10 images"):
        paired_bootstrap(sure(truths), sure(truths)[:9], truths, N_CLASSES)


def test_perfect_predictions_have_map50_of_one_with_no_spread():
    truths = scenes(25, 50)
    r = metric_interval(sure(truths), truths, N_CLASSES, n_resamples=200)
    assert (r.value, r.low, r.high) == (1.0, 1.0, 1.0)
    assert r.n_images == 50 and r.n_resamples == 200 and r.metric == "map50"


def test_the_single_model_interval_contains_the_full_set_value():
    truths = scenes(26, 100)
    for metric in ("map50", "map50_95"):
        r = metric_interval(noisy(truths, 27), truths, N_CLASSES, metric=metric)
        assert r.low < r.value < r.high
        assert 0 < r.high - r.low < 0.5


def test_the_single_model_value_is_the_map_evaluate_detections_reports():
    truths = scenes(28, 80)
    preds = noisy(truths, 29)
    m = evaluate_detections(preds, truths, N_CLASSES)
    r50 = metric_interval(preds, truths, N_CLASSES, n_resamples=20)
    r95 = metric_interval(preds, truths, N_CLASSES, n_resamples=20, metric="map50_95")
    assert r50.value == pytest.approx(m.map50, abs=1e-12)
    assert r95.value == pytest.approx(m.map50_95, abs=1e-12)


def test_the_single_model_interval_is_wider_with_fewer_images():
    def width(n_images: int) -> float:
        truths = scenes(30, n_images)
        r = metric_interval(noisy(truths, 31), truths, N_CLASSES, n_resamples=400)
        return r.high - r.low

    # Ten times the images: about a third of the width (1/sqrt(10)).
    assert width(200) < 0.6 * width(20)


def test_the_same_seed_draws_the_same_single_model_interval():
    truths = scenes(32, 60)
    preds = noisy(truths, 33)
    first = metric_interval(preds, truths, N_CLASSES, n_resamples=300, seed=11)
    assert metric_interval(preds, truths, N_CLASSES, n_resamples=300, seed=11) == first
    other = metric_interval(preds, truths, N_CLASSES, n_resamples=300, seed=12)
    assert (other.low, other.high) != (first.low, first.high) and other.value == first.value
    record = json.loads(json.dumps(first.as_dict()))
    fields = {"value", "low", "high", "n_images", "n_resamples", "confidence", "metric"}
    assert set(record) == fields


def test_a_single_model_interval_without_ground_truth_or_with_bad_arguments_is_refused():
    empty = [np.zeros((0, 5))] * 5
    fp = [np.array([[0.1, 0.1, 0.3, 0.3, 0.9, 0]])] * 5
    with pytest.raises(ValueError, match="map50 is undefined: no object it counts in 5 image"):
        metric_interval(fp, empty, N_CLASSES)
    truths = scenes(34, 10)
    with pytest.raises(ValueError, match=r"confidence 1\.5 is outside"):
        metric_interval(sure(truths), truths, N_CLASSES, confidence=1.5)
    with pytest.raises(ValueError, match="metric ap_large has no single-model interval"):
        metric_interval(sure(truths), truths, N_CLASSES, metric="ap_large")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="9 prediction arrays for 10 images"):
        metric_interval(sure(truths)[:9], truths, N_CLASSES)
