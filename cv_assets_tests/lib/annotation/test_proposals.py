import numpy as np
import pandas as pd
import pytest

from cv_assets.lib.annotation.proposals import (
    box_uncertainty,
    image_uncertainty,
    propose,
    propose_for_pool,
)
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.synth.batches import CLASSES, write_batches
from cv_assets_tests.support.models import constant_detector

pytestmark = pytest.mark.unit


def test_uncertainty_is_the_margin_to_the_decision_threshold():
    assert box_uncertainty(0.25) == 1.0  # the coin toss at the app's threshold
    assert box_uncertainty(1.0) == pytest.approx(0.0)
    assert box_uncertainty(0.05) == pytest.approx(1 - 0.2 / 0.75)
    assert box_uncertainty(0.5, threshold=0.5) == 1.0 and box_uncertainty(0.0, 0.5) == 0.0
    # An image is as uncertain as its most doubtful box; one with no box scores 0.
    assert image_uncertainty([0.99, 0.3, 0.9]) == pytest.approx(box_uncertainty(0.3))
    assert image_uncertainty([]) == 0.0


def test_proposals_keep_boxes_over_the_floor_and_rank_images_most_uncertain_first():
    found = {
        "a.jpg": np.array([[0.1, 0.2, 0.3, 0.6, 0.97, 1], [0, 0, 1, 1, 0.01, 0]]),
        "b.jpg": np.array([[0.5, 0.5, 0.7, 0.9, 0.26, 2]]),
        "c.jpg": np.zeros((0, 6)),
    }
    pool = pd.DataFrame({"sha256": ["ha", "hb", "hc"], "stem": ["a", "b", "c"],
                         "path": ["a.jpg", "b.jpg", "c.jpg"], "image_uri": ["ua", "ub", "uc"],
                         "width": [64, 64, 32], "height": [48, 48, 32]})  # fmt: skip
    out = propose(pool, lambda p: found[p], CLASSES)
    assert list(out.images["stem"]) == ["b", "a", "c"]  # 0.26 is near the threshold
    assert list(out.images["n_boxes"]) == [1, 1, 0]  # the 0.01 box is under the floor
    # A round shows the image from the pool's URI, at the size intake measured.
    assert list(out.images["image_uri"]) == ["ub", "ua", "uc"]
    assert list(out.images["width"]) == [64, 64, 32]
    a = out.boxes[out.boxes["stem"] == "a"].iloc[0]
    assert a["class"] == CLASSES[1] and a["confidence"] == pytest.approx(0.97)
    assert (a["cx"], a["cy"], a["w"], a["h"]) == pytest.approx((0.2, 0.4, 0.2, 0.4))
    assert sum(n for _, n in out.histogram()) == 3


def test_the_pool_of_a_batch_is_scored_through_a_real_onnx_file(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    onnx = constant_detector(tmp_path / "const.onnx")
    (b,) = write_batches(tmp_path / "landing", 1, 3, seed=1, size=64)
    rows = []
    for i, img in enumerate(sorted((b.path / "images").glob("*.jpg"))):
        rows.append({"sha256": f"h{i}", "stem": img.stem,
                     "image_uri": store.put_file(f"std/{img.name}", img).uri,
                     "width": 64, "height": 64})  # fmt: skip
    frame = pd.DataFrame(rows)
    pool = store.put_bytes("validated/b/unlabelled.parquet", frame.to_parquet(index=False))
    det = store.put_file("models/const.onnx", onnx)
    out = propose_for_pool(store, pool.uri, det.uri, CLASSES)
    assert len(out.images) == 3 and list(out.images["n_boxes"]) == [1, 1, 1]
    assert set(out.boxes["class"]) == {"circle"}  # what the constant head always reports
    assert out.images["uncertainty"].tolist() == pytest.approx([box_uncertainty(0.9)] * 3)
    empty = propose_for_pool(store, None, det.uri, CLASSES)
    assert len(empty.images) == 0 and len(empty.boxes) == 0
