import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cv_assets.lib.annotation.select import image_features, select_for_labelling
from cv_assets.lib.synth.scenes import Shift, render_scene

pytestmark = pytest.mark.unit


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _scene(seed: int, size: int = 128) -> Image.Image:
    return render_scene(np.random.default_rng(seed), size, Shift())[0]


def _jittered(image: Image.Image, seed: int, px: int = 3, brightness: float = 12.0) -> Image.Image:
    """The next frame of the same scene: moved a few pixels, a brightness step, fresh noise."""
    rng = np.random.default_rng(seed)
    a = np.asarray(image, dtype=np.float32)
    dx, dy = (int(v) for v in rng.integers(-px, px + 1, size=2))
    padded = np.pad(a, ((px, px), (px, px), (0, 0)), mode="edge")
    a = padded[px + dy : px + dy + a.shape[0], px + dx : px + dx + a.shape[1]]
    a = a + rng.uniform(-brightness, brightness) + rng.normal(0.0, 4.0, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _pool(images: dict[str, Image.Image], uncertainty: dict[str, float]):
    stems = list(images)
    frame = pd.DataFrame({"stem": stems, "uncertainty": [uncertainty[s] for s in stems]})
    return frame, np.stack([image_features(_jpeg(images[s])) for s in stems])


def test_frames_of_one_scene_are_closer_than_any_two_scenes():
    scenes = [_scene(i) for i in range(8)]
    base = np.stack([image_features(_jpeg(s)) for s in scenes])
    frames = np.stack([image_features(_jpeg(_jittered(s, 100 + i))) for i, s in enumerate(scenes)])
    same = np.linalg.norm(base - frames, axis=1)
    apart = np.linalg.norm(base[:, None] - base[None], axis=2)[np.triu_indices(8, k=1)]
    assert same.max() < 0.5 < apart.min()
    assert base.shape == (8, 256 + 9) and base.dtype == np.float32
    assert np.linalg.norm(base, axis=1) == pytest.approx(np.ones(8), abs=1e-5)


def test_features_are_a_function_of_the_bytes():
    data = _jpeg(_scene(3))
    assert np.array_equal(image_features(data), image_features(data))
    png = io.BytesIO()
    _scene(3).save(png, "PNG")
    assert np.linalg.norm(image_features(png.getvalue()) - image_features(data)) < 0.1


def test_a_near_duplicate_loses_to_a_distinct_slightly_less_uncertain_image():
    a = _scene(1)
    images = {"a": a, "a_next": _jittered(a, 7), "b": _scene(2), "c": _scene(3)}
    frame, feats = _pool(images, {"a": 0.95, "a_next": 0.94, "b": 0.80, "c": 0.30})
    picked = select_for_labelling(frame, feats, k=2)
    assert list(picked["stem"]) == ["a", "b"]  # uncertainty alone would take a and a_next
    assert picked["nearest_picked_distance"].min() > 0.5
    # A frame of a pick is discounted, not barred: 0.94 x d / d0 still beats a settled image.
    everything = select_for_labelling(frame, feats, k=4)
    assert list(everything["stem"]) == ["a", "a_next", "b", "c"]
    assert list(everything["pick"]) == [1, 3, 2, 4]


def test_picks_are_listed_most_uncertain_first_with_their_rank():
    images = {f"s{i}": _scene(10 + i) for i in range(6)}
    u = {"s0": 0.2, "s1": 0.9, "s2": 0.5, "s3": 0.7, "s4": 0.1, "s5": 0.6}
    frame, feats = _pool(images, u)
    picked = select_for_labelling(frame, feats, k=4)
    assert list(picked["stem"]) == ["s1", "s3", "s5", "s2"]  # distinct scenes: by uncertainty
    assert list(picked["rank"]) == [1, 2, 3, 4]
    assert picked["uncertainty"].is_monotonic_decreasing
    assert {"rank", "uncertainty", "nearest_picked_distance", "pick", "stem"} <= set(picked)


def test_k_larger_than_the_pool_picks_every_candidate_once():
    images = {f"s{i}": _scene(20 + i) for i in range(3)}
    frame, feats = _pool(images, {"s0": 0.4, "s1": 0.8, "s2": 0.6})
    picked = select_for_labelling(frame, feats, k=10)
    assert sorted(picked["stem"]) == ["s0", "s1", "s2"] and list(picked["rank"]) == [1, 2, 3]
    one = select_for_labelling(frame, feats, k=1)
    assert list(one["stem"]) == ["s1"] and np.isnan(one["nearest_picked_distance"].iloc[0])


def test_the_same_pool_in_any_row_order_gives_the_same_picks():
    a = _scene(30)
    images = {"x": a, "y": _jittered(a, 1), "z": _scene(31), "w": _scene(32)}
    frame, feats = _pool(images, {"x": 0.7, "y": 0.7, "z": 0.7, "w": 0.7})
    first = select_for_labelling(frame, feats, k=2)
    again = select_for_labelling(frame, feats, k=2)
    order = [3, 1, 0, 2]
    shuffled = select_for_labelling(frame.iloc[order], feats[order], k=2)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, shuffled)
    assert list(first["stem"]) == ["w", "x"]  # equal scores: the smaller stem, never x with y


def test_empty_pools_nans_and_unplaceable_images_are_handled():
    empty = select_for_labelling(pd.DataFrame({"stem": [], "uncertainty": []}), np.zeros(0), 5)
    assert len(empty) == 0 and {"rank", "nearest_picked_distance"} <= set(empty)
    images = {f"s{i}": _scene(40 + i) for i in range(3)}
    frame, feats = _pool(images, {"s0": np.nan, "s1": 0.3, "s2": 0.9})
    feats[2, 0] = np.nan  # an image whose features could not be computed
    picked = select_for_labelling(frame, feats, k=3)
    assert list(picked["stem"]) == ["s1", "s0"]  # s2 is never picked; NaN uncertainty is 0
    assert list(picked["uncertainty"]) == [0.3, 0.0]
    with pytest.raises(ValueError, match=r"features must be \(n_candidates, D\) = \(3, D\)"):
        select_for_labelling(frame, feats[:2], k=1)


def test_min_distance_is_a_hard_floor_between_picks():
    a = _scene(50)
    images = {"a": a, "a1": _jittered(a, 1), "a2": _jittered(a, 2), "b": _scene(51)}
    frame, feats = _pool(images, {"a": 0.9, "a1": 0.85, "a2": 0.8, "b": 0.1})
    picked = select_for_labelling(frame, feats, k=4, min_distance=0.5)
    assert list(picked["stem"]) == ["a", "b"]  # fewer than k: the rest are frames of a
    # Without the discount, uncertainty alone ranks, and only the floor keeps the frames out.
    plain = select_for_labelling(frame, feats, k=2, distance_scale=0)
    assert list(plain["stem"]) == ["a", "a1"]
