"""Our mAP against the COCO reference (faster-coco-eval, pycocotools' COCOeval in C++).

Both score the same arrays: normalised boxes become pixel ``xywh`` boxes in each image's
model-input size. Measured on these cases: our mAP50, mAP50-95, AP per class and AP by size are
within 2.3e-15 of the reference (float rounding). Before the alignment to COCO (Ultralytics-style
matching, trapezoid over an interpolated envelope, no cap of 100 detections) mAP50 was off by
-0.049..+0.061 and mAP50-95 by -0.029..+0.059. Asserted: ``TOLERANCE`` = 1e-9, far below the
smallest change one detection's match makes (about 1e-4 with a thousand objects).
"""

from __future__ import annotations

import numpy as np
import pytest

from cv_assets.lib.core.metrics import DetectionMetrics, evaluate_detections
from cv_assets_tests.support.coco import Case, coco_reference

pytestmark = pytest.mark.unit

TOLERANCE = 1e-9
N_CLASSES = 3
# Model-input sizes (width, height): square and letterboxed-looking, small and large.
SIZES = [(224, 224), (320, 240), (640, 480), (416, 416)]


def noisy_detections(
    seed: int,
    n_images: int = 150,
    sizes: list[tuple[int, int]] = SIZES,
    no_predictions_for: int | None = None,
    no_truth_for: int | None = None,
    crowded_every: int = 0,
) -> Case:
    """A detector's output on a test set: jittered hits, wrong classes, duplicates, misses, false
    positives and empty images, over objects from 4 to 450 px wide and three unequal classes."""
    rng = np.random.default_rng(seed)
    preds, truths, image_sizes = [], [], []
    for i in range(n_images):
        w_px, h_px = sizes[int(rng.integers(len(sizes)))]
        image_sizes.append((float(w_px), float(h_px)))
        n = 0 if rng.random() < 0.1 else int(rng.integers(1, 8))
        side = np.exp(rng.uniform(np.log(0.02), np.log(0.7), n))
        w, h = side * rng.uniform(0.6, 1.4, n), side * rng.uniform(0.6, 1.4, n)
        w, h = np.minimum(w, 0.99), np.minimum(h, 0.99)
        cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
        cls = rng.choice(N_CLASSES, n, p=[0.5, 0.3, 0.2])
        truth = np.column_stack([cls, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        if no_truth_for is not None:
            truth = truth[truth[:, 0] != no_truth_for]
        rows = []
        for c, *box in truth:
            if rng.random() < 0.15:
                continue  # missed
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            for dup in range(1 + int(rng.random() < 0.2)):  # a duplicate, looser and less sure
                jittered = np.array(box) + rng.normal(0, 0.08 * (1 + dup), 4) * size
                label = c if rng.random() < 0.9 else rng.integers(N_CLASSES)
                rows.append([*jittered, rng.beta(5, 2) * (0.7 if dup else 1.0), label])
        for _ in range(rng.poisson(1.0)):  # false positives, mostly unsure
            s = rng.uniform(0.03, 0.5)
            x, y = rng.uniform(0, 1 - s, 2)
            rows.append([x, y, x + s, y + s * rng.uniform(0.5, 1.5), rng.beta(2, 5), 0])
            rows[-1][5] = rng.integers(N_CLASSES)
        if crowded_every and i % crowded_every == 0:  # more than COCO's 100 per image and class
            truth = np.vstack([truth, [[0, 0.1, 0.1, 0.3, 0.3]] * 3])
            box = np.array([0.1, 0.1, 0.3, 0.3]) + rng.normal(0, 0.01, (150, 4))
            rows += np.column_stack([box, rng.uniform(0, 1, 150), np.zeros(150)]).tolist()
        pred = np.array(rows, dtype=float).reshape(-1, 6)
        pred[:, :4] = np.clip(pred[:, :4], 0, 1)
        pred[:, 2:4] = np.maximum(pred[:, 2:4], pred[:, 0:2] + 1e-3)
        if no_predictions_for is not None:
            pred = pred[pred[:, 5] != no_predictions_for]
        preds.append(pred)
        truths.append(truth)
    return preds, truths, image_sizes


CASES = {
    "noisy": {"seed": 0},
    "class_without_predictions": {"seed": 1, "no_predictions_for": 1},
    "class_without_truth": {"seed": 2, "no_truth_for": 2},
    "many_images": {"seed": 3, "n_images": 400},
    "few_images": {"seed": 4, "n_images": 12},
    "square_224": {"seed": 5, "sizes": [(224, 224)]},
    "tiny_and_hd_inputs": {"seed": 6, "sizes": [(96, 64), (1280, 720)]},
    "over_100_per_image": {"seed": 7, "n_images": 40, "crowded_every": 5},
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def scored(request: pytest.FixtureRequest) -> tuple[DetectionMetrics, np.ndarray, np.ndarray]:
    case = noisy_detections(**CASES[request.param])
    ours = evaluate_detections(case[0], case[1], N_CLASSES, image_sizes=case[2])
    return ours, *coco_reference(case)


def test_map_matches_the_coco_reference(scored):
    ours, stats, _ = scored
    assert abs(ours.map50_95 - stats[0]) <= TOLERANCE
    assert abs(ours.map50 - stats[1]) <= TOLERANCE
    assert 0.2 < ours.map50_95 < ours.map50 < 0.9  # a realistic detector, not a degenerate one


def test_ap_by_size_matches_the_coco_reference(scored):
    ours, stats, _ = scored
    for ap, ref in zip((ours.ap_small, ours.ap_medium, ours.ap_large), stats[3:6], strict=True):
        assert ap is not None and abs(ap - ref) <= TOLERANCE


def test_ap_per_class_matches_the_coco_reference_and_skips_classes_without_truth(scored):
    ours, _, per_class = scored
    has_truth = np.array(ours.n_instances) > 0
    assert np.allclose(np.array(ours.ap_per_class)[has_truth], per_class[has_truth], atol=TOLERANCE)
    assert (per_class[~has_truth] == -1).all()  # COCO's "no AP": left out of our mean too
