"""Live performance: the degradation rule's edges, and scoring an ONNX file on a stored batch."""

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.monitoring.performance import (
    batch_performance,
    judge_degradation,
    training_batches,
)
from cv_assets_tests.support.models import constant_detector

pytestmark = pytest.mark.unit

CLASSES = ["square", "circle", "triangle"]


def test_a_drop_beyond_the_margin_is_degraded_and_the_reason_names_the_numbers():
    degraded, reason = judge_degradation(0.55, 0.80, n_images=50, margin=0.10)
    assert degraded
    assert "0.550" in reason and "0.250 below" in reason and "0.800" in reason
    assert "margin 0.100" in reason


def test_a_drop_of_exactly_the_margin_or_less_is_not_degraded():
    assert judge_degradation(0.70, 0.80, n_images=50, margin=0.10) == (
        False,
        "ok: batch mAP50 0.700 is 0.100 below the champion's test mAP50 0.800 "
        "(within margin 0.100)",
    )
    assert not judge_degradation(0.95, 0.80, n_images=50, margin=0.10)[0]
    assert judge_degradation(0.6999, 0.80, n_images=50, margin=0.10)[0]


def test_a_negative_margin_trips_even_when_the_batch_matches_the_test():
    assert judge_degradation(0.80, 0.80, n_images=50, margin=-0.01)[0]


def test_a_training_batch_is_never_degraded_however_low_its_map():
    degraded, reason = judge_degradation(0.0, 0.9, n_images=500, in_training_data=True)
    assert not degraded and "in the champion's training dataset" in reason


def test_too_few_images_are_not_judged():
    degraded, reason = judge_degradation(0.0, 0.9, n_images=19, min_images=20)
    assert not degraded and "19 images (min_images 20)" in reason
    assert judge_degradation(0.0, 0.9, n_images=20, min_images=20)[0]


def test_a_batch_without_objects_or_a_champion_without_test_map_is_not_judged():
    empty = judge_degradation(0.0, 0.9, n_images=50, n_instances=0)
    assert empty == (False, "batch mAP50 0.000: not judged, the batch's labels hold no objects")
    unknown = judge_degradation(0.1, None, n_images=50)
    assert not unknown[0] and "no test mAP50" in unknown[1]


def _stored_batch(store: ArtifactStore, batch_id: str, label: str, n: int) -> str:
    """``n`` 64x64 images whose labels all read ``label``; returns the samples table's URI."""
    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (i, 90, 160)).save(buf, format="PNG")
        img = store.put_bytes(f"validated/{batch_id}/images/s{i:03d}.png", buf.getvalue())
        lab = store.put_bytes(f"validated/{batch_id}/labels/s{i:03d}.txt", label.encode())
        rows.append({"sha256": img.sha256, "image_uri": img.uri, "label_uri": lab.uri})
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    return store.put_bytes(f"validated/{batch_id}/samples.parquet", buf.getvalue()).uri


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """A store with the 'circle in the centre' detector and a dataset built from batch 'old'."""
    s = ArtifactStore(str(tmp_path / "artifacts"))
    s.put_file("models/m.onnx", constant_detector(tmp_path / "m.onnx"))
    buf = io.BytesIO()
    pd.DataFrame({"batch_id": ["old", "old", "older"], "sha256": ["a", "b", "c"]}).to_parquet(buf)
    s.put_bytes("datasets/v1/samples.parquet", buf.getvalue())
    return s


def _score(store: ArtifactStore, batch_id: str, label: str, n: int, **kw):
    return batch_performance(
        store,
        batch_id=batch_id,
        samples_uri=_stored_batch(store, batch_id, label, n),
        detector_uri=store.uri("models/m.onnx"),
        dataset_version="v1",
        classes=CLASSES,
        champion_test_map50=0.9,
        **kw,
    )


def test_a_detector_that_finds_every_object_scores_one_and_is_not_degraded(store):
    perf = _score(store, "new", "1 0.5 0.5 0.5 0.5\n", 24)
    m = perf.metrics
    # COCO's 101-point rule gives a perfect detector 1.0 (Ultralytics' trapezoid reports 0.995).
    assert m.map50 == pytest.approx(1.0) and m.map50_95 > 0.99
    assert (m.n_images, m.n_instances) == (24, [0, 24, 0])
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(1.0)
    assert not perf.in_training_data and not perf.degraded
    assert perf.drop == pytest.approx(0.9 - 1.0)
    circle = perf.per_class()[1]
    assert circle["class"] == "circle" and circle["instances"] == 24 and circle["ap50"] == 1.0


def test_a_detector_that_names_the_wrong_class_scores_zero_and_is_degraded(store):
    perf = _score(store, "new", "0 0.5 0.5 0.5 0.5\n", 24, margin=0.1)
    assert perf.metrics.map50 == 0.0 and perf.metrics.n_instances == [24, 0, 0]
    assert perf.degraded and perf.summary()["drop"] == 0.9
    assert perf.reason.startswith("degraded: batch mAP50 0.000 is 0.900 below")


def test_the_same_failure_on_a_training_batch_is_measured_but_not_judged(store):
    perf = _score(store, "old", "0 0.5 0.5 0.5 0.5\n", 24)
    assert perf.in_training_data and perf.metrics.map50 == 0.0 and not perf.degraded


def test_a_large_batch_is_scored_on_max_images_and_a_small_one_is_not_judged(store):
    assert _score(store, "big", "0 0.5 0.5 0.5 0.5\n", 12, max_images=10).metrics.n_images == 10
    small = _score(store, "small", "0 0.5 0.5 0.5 0.5\n", 12, min_images=20)
    assert not small.degraded and "12 images (min_images 20)" in small.reason


def test_training_batches_come_from_the_dataset_and_a_missing_one_is_named(store):
    assert training_batches(store, "v1") == {"old", "older"}
    with pytest.raises(ValueError, match=r"datasets/v2/samples\.parquet: missing"):
        training_batches(store, "v2")
