"""The champion's proposals for the unlabelled pool: every detection it makes on a batch's
unlabelled images, with its confidence, and one uncertainty score per image that ranks what a
person should label first (issue 17's annotation rounds read it).

Uncertainty is margin sampling on the app's decision threshold ``t`` (the confidence at which the
app shows a box): a box whose confidence ``c`` sits at ``t`` is the model's coin toss, one far
from it is a settled call. Per box, ``u = 1 - |c - t| / max(t, 1 - t)`` (1 at ``c = t``, 0 at
``c = 0`` or ``1`` when ``t = 0.5``); per image, the largest ``u`` of its boxes over the floor: an
image is as uncertain as its most doubtful box. An image with no box over the floor scores 0 (the
model sees nothing there; a missed object is what the label-issue queue looks for, not this).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.onnx_detect import OnnxDetector, read_image
from cv_assets.lib.core.store import ArtifactStore

FLOOR = 0.05  # detections under this confidence are noise, not proposals
THRESHOLD = 0.25  # the app's decision threshold (cv-assets predict's default)
BOX_COLUMNS = ["sha256", "stem", "class_id", "class", "confidence", "cx", "cy", "w", "h"]
IMAGE_COLUMNS = [
    *("sha256", "stem", "n_boxes", "max_confidence", "uncertainty"),
    *("image_uri", "width", "height"),  # what an annotation round needs to show the image
]
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def box_uncertainty(confidence: float, threshold: float = THRESHOLD) -> float:
    return 1.0 - abs(confidence - threshold) / max(threshold, 1.0 - threshold)


def image_uncertainty(confidences: Sequence[float], threshold: float = THRESHOLD) -> float:
    return max((box_uncertainty(c, threshold) for c in confidences), default=0.0)


@dataclass
class Proposals:
    boxes: pd.DataFrame  # BOX_COLUMNS: one row per proposed box, coordinates normalised
    images: pd.DataFrame  # IMAGE_COLUMNS: one row per unlabelled image, most uncertain first

    def histogram(self) -> list[tuple[str, int]]:
        """Images per uncertainty bucket, for the UI."""
        return histogram(self.images["uncertainty"])


def histogram(uncertainty: Any) -> list[tuple[str, int]]:
    """Images per uncertainty bucket (``0.0-0.2`` ... ``0.8-1.0``) of a column of scores."""
    counts, _ = np.histogram(np.asarray(uncertainty, dtype=float), bins=BINS)
    edges = zip(BINS[:-1], BINS[1:], counts, strict=True)
    return [(f"{lo:.1f}-{hi:.1f}", int(n)) for lo, hi, n in edges]


def propose(
    pool: pd.DataFrame,
    detect: Callable[[str], np.ndarray],
    classes: Sequence[str],
    floor: float = FLOOR,
    threshold: float = THRESHOLD,
) -> Proposals:
    """Run ``detect`` (a local image path -> ``(M, 6)`` normalised ``x1 y1 x2 y2 conf cls``) on
    each pooled image (``pool``: ``sha256``, ``stem``, ``path``, ``image_uri``, ``width``,
    ``height``)."""
    boxes, images = [], []
    cols = ["sha256", "stem", "path", "image_uri", "width", "height"]
    for sha, stem, path, uri, width, height in pool[cols].itertuples(index=False):
        found = detect(str(path))
        found = found[found[:, 4] >= floor] if len(found) else found
        for x1, y1, x2, y2, conf, cls in found.tolist():
            k = int(cls)
            boxes.append((sha, stem, k, classes[k] if k < len(classes) else str(k), conf,
                          (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))  # fmt: skip
        confs = [float(c) for c in found[:, 4]] if len(found) else []
        u = image_uncertainty(confs, threshold)
        images.append((sha, stem, len(confs), max(confs, default=0.0), u, uri, width, height))
    img = pd.DataFrame.from_records(images, columns=IMAGE_COLUMNS)
    img = img.sort_values(["uncertainty", "sha256"], ascending=[False, True], ignore_index=True)
    return Proposals(pd.DataFrame.from_records(boxes, columns=BOX_COLUMNS), img)


def propose_for_pool(
    store: ArtifactStore,
    pool_uri: str | None,
    detector_uri: str,
    classes: Sequence[str],
    floor: float = FLOOR,
    threshold: float = THRESHOLD,
) -> Proposals:
    """The champion's proposals for one batch's pool (``validated/<batch>/unlabelled.parquet``;
    a batch validated before the pool existed has none)."""
    if pool_uri is None:
        pool = pd.DataFrame({c: [] for c in ("sha256", "stem", "image_uri", "width", "height")})
    else:
        pool = pd.read_parquet(io.BytesIO(store.get_bytes(store.key_of(pool_uri))))
    with scratch_dir("proposals") as tmp:
        cache = Path(tmp)
        if len(pool) == 0:
            return propose(pool.assign(path=[]), lambda p: np.zeros((0, 6)), classes)
        detector = OnnxDetector(local_file(store, detector_uri, cache))
        paths = [str(local_file(store, u, cache)) for u in pool["image_uri"]]
        return propose(
            pool.assign(path=paths),
            lambda p: detector.detect(read_image(p), conf=floor),
            classes,
            floor,
            threshold,
        )
