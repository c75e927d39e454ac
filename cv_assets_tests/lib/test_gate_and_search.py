import numpy as np
import pytest

from cv_assets.lib.metrics import DetectionMetrics
from cv_assets.lib.training import cache_key, gate, search_space
from cv_assets.lib.yolo import TrainParams

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


def test_grid_and_random_search_spaces():
    space = {"lr0": [0.001, 0.002], "imgsz": [96, 128], "model_yaml": ["yolo11n.yaml"]}
    grid = search_space("grid", 3, space)
    assert len(grid) == 3 and grid[0] == {"imgsz": 96, "lr0": 0.001, "model_yaml": "yolo11n.yaml"}
    rnd = search_space("random", 3, space, seed=1)
    assert len(rnd) == 3 and rnd == search_space("random", 3, space, seed=1)
    assert len({tuple(sorted(d.items())) for d in rnd}) == 3
    with pytest.raises(ValueError, match="expected 'grid' or 'random'"):
        search_space("bayes", 2, space)
