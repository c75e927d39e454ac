"""The COCO reference score (faster-coco-eval, pycocotools' COCOeval in C++) of detections."""

from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

# Per image: predictions (x1, y1, x2, y2, score, class), truths (class, x1, y1, x2, y2), both
# normalised, and the model-input size (width, height) in pixels.
Case = tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float]]]


def coco_reference(case: Case, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's stats (AP, AP50, AP75, AP small, medium, large, ...) and its AP per class."""
    preds, truths, sizes = case
    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for i, (pred, truth, (w, h)) in enumerate(zip(preds, truths, sizes, strict=True)):
        images.append({"id": i + 1, "width": w, "height": h})
        for c, x1, y1, x2, y2 in truth:
            bw, bh = (x2 - x1) * w, (y2 - y1) * h
            gts.append(
                {"id": len(gts) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                 "bbox": [x1 * w, y1 * h, bw, bh], "area": bw * bh, "iscrowd": 0}
            )  # fmt: skip
        for x1, y1, x2, y2, score, c in pred:
            dets.append(
                {"image_id": i + 1, "category_id": int(c) + 1, "score": float(score),
                 "bbox": [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]}
            )  # fmt: skip
    categories = [{"id": c + 1, "name": str(c)} for c in range(n_classes)]
    coco_gt = COCO({"images": images, "annotations": gts, "categories": categories})
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "bbox", print_function=lambda *_: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    # precision: (iou, recall, class, area, max dets); -1 for a class with no ground truth.
    per_class = np.asarray(ev.eval["precision"])[:, :, :, 0, -1].mean(axis=(0, 1))
    return np.asarray(ev.stats), per_class
