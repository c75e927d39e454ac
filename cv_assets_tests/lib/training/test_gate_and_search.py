import numpy as np
import pytest

from cv_assets.lib.core.metrics import DetectionMetrics
from cv_assets.lib.training.bootstrap import BootstrapResult
from cv_assets.lib.training.gate import gate, shadow_verdict
from cv_assets.lib.training.search import grid_points
from cv_assets.lib.training.train import cache_key
from cv_assets.lib.training.yolo import TrainParams

pytestmark = pytest.mark.unit


def metrics(map50: float, map50_95: float) -> DetectionMetrics:
    return DetectionMetrics(
        map50,
        map50_95,
        0.5,
        0.5,
        [map50],
        [map50_95],
        10,
        [5],
        np.zeros((2, 2)),
        np.zeros(3),
        np.zeros((1, 3)),
    )


def test_first_model_faces_the_floor_only():
    assert gate(metrics(0.6, 0.3), None, 0.5, 0.0).passed
    d = gate(metrics(0.4, 0.3), None, 0.5, 0.0)
    assert not d.passed and "below the floor 0.500" in d.reasons[0]


def test_challenger_worse_than_champion_is_not_blessed():
    d = gate(metrics(0.9, 0.60), metrics(0.9, 0.61), 0.5, 0.0)
    assert not d.passed and "the champion stays" in d.reasons[-1]


def test_epsilon_tolerates_a_small_regression():
    assert gate(metrics(0.9, 0.60), metrics(0.9, 0.61), 0.5, 0.02).passed


def test_equal_challenger_passes_with_zero_epsilon():
    assert gate(metrics(0.9, 0.6), metrics(0.9, 0.6), 0.5, 0.0).passed


def test_cache_key_depends_on_dataset_params_and_warm_start():
    p = TrainParams(epochs=3)
    assert cache_key("d1", p, None) == cache_key("d1", TrainParams(epochs=3), None)
    assert cache_key("d1", p, None) != cache_key("d2", p, None)
    assert cache_key("d1", p, None) != cache_key("d1", TrainParams(epochs=4), None)
    assert cache_key("d1", p, None) != cache_key("d1", p, "abc")


def test_grid_points_keep_their_order_fields_sorted_the_last_varying_fastest():
    space = {"lr0": [0.001, 0.002], "imgsz": [96, 128], "model_yaml": ["yolo11n.yaml"]}
    grid = grid_points(space, 3)
    assert grid == [
        {"imgsz": 96, "lr0": 0.001, "model_yaml": "yolo11n.yaml"},
        {"imgsz": 96, "lr0": 0.002, "model_yaml": "yolo11n.yaml"},
        {"imgsz": 128, "lr0": 0.001, "model_yaml": "yolo11n.yaml"},
    ]
    assert len(grid_points(space, 10)) == 4  # the whole grid, never more
    assert grid_points({"imgsz": [64, 64]}, 5) == [{"imgsz": 64}]  # a value listed twice: once


def _shadow(challenger: float, champion: float | None) -> dict:
    return {
        "batches": ["b7", "b8"],
        "images": 25,
        "challenger": {"map50_95": challenger},
        "champion": {"map50_95": champion} if champion is not None else None,
    }


def test_shadow_scores_are_reported_beside_the_gate_by_default():
    blessed = gate(metrics(0.9, 0.60), metrics(0.9, 0.55), 0.5, 0.0)
    d = shadow_verdict(blessed, _shadow(0.40, 0.50), 0.0, as_gate=False)
    assert d.passed and "25 held-out images of b7, b8" in d.reasons[-1]
    assert "0.400 vs champion 0.500, not a criterion" in d.reasons[-1]


def test_shadow_as_a_gate_criterion_blocks_a_challenger_worse_on_new_data():
    blessed = gate(metrics(0.9, 0.60), metrics(0.9, 0.55), 0.5, 0.0)
    d = shadow_verdict(blessed, _shadow(0.40, 0.50), 0.05, as_gate=True)
    assert not d.passed and "0.400 is below champion 0.500 - epsilon 0.05" in d.reasons[-1]
    assert shadow_verdict(blessed, _shadow(0.46, 0.50), 0.05, as_gate=True).passed


def test_shadow_without_a_champion_or_images_changes_nothing():
    first = gate(metrics(0.9, 0.60), None, 0.5, 0.0)
    assert shadow_verdict(first, None, 0.0, as_gate=True) == first
    d = shadow_verdict(first, _shadow(0.4, None), 0.0, as_gate=True)
    assert d.passed and "no champion to compare" in d.reasons[-1]


def _interval(delta: float, low: float, high: float) -> BootstrapResult:
    return BootstrapResult(delta, low, high, 60, 1000, 0.95, "map50_95")


def test_the_interval_is_reported_and_decides_only_when_required():
    gain = gate(
        metrics(0.9, 0.62), metrics(0.9, 0.60), 0.5, 0.0, interval=_interval(0.02, -0.03, 0.07)
    )
    assert gain.passed and "interval [-0.030, +0.070]" in gain.reasons[-1]
    assert "not a criterion" in gain.reasons[-1] and gain.interval["low"] == -0.03  # type: ignore[index]
    strict = gate(
        metrics(0.9, 0.62),
        metrics(0.9, 0.60),
        0.5,
        0.0,
        interval=_interval(0.02, -0.03, 0.07),
        require_interval=True,
    )
    assert not strict.passed and "cannot rule out a regression" in strict.reasons[-1]
    clear = gate(
        metrics(0.9, 0.62),
        metrics(0.9, 0.60),
        0.5,
        0.05,
        interval=_interval(0.02, -0.03, 0.07),
        require_interval=True,
    )
    assert clear.passed and "lower bound >= -epsilon 0.05" in clear.reasons[-1]


def per_class(aps: list[float], n: list[int]) -> DetectionMetrics:
    m = metrics(0.9, sum(aps) / len(aps))
    m.ap_per_class, m.n_instances = aps, n
    m.ap50_per_class = aps
    return m


def test_a_class_that_falls_fails_the_per_class_rule_only_when_it_is_on():
    champ = per_class([0.6, 0.6, 0.0], [5, 5, 0])
    chal = per_class([0.8, 0.5, 0.0], [5, 5, 0])  # better on average, circle fell 0.1
    shown = gate(chal, champ, 0.5, 0.0, classes=["square", "circle", "triangle"])
    assert shown.passed and [c["class"] for c in shown.class_changes] == ["square", "circle"]
    assert shown.class_changes[1]["change"] == pytest.approx(-0.1)
    judged = gate(
        chal, champ, 0.5, 0.0, class_epsilon=0.05, classes=["square", "circle", "triangle"]
    )
    assert not judged.passed and "circle -0.100" in judged.reasons[-1]
    lenient = gate(
        chal, champ, 0.5, 0.0, class_epsilon=0.2, classes=["square", "circle", "triangle"]
    )
    assert lenient.passed and "no AP50-95 fell more than class_epsilon 0.2" in lenient.reasons[-1]
