"""Auto-accepting the champion's confident pre-annotations: the images of a batch's unlabelled
pool whose every proposal is a confident one land as a batch of model labels (issue 17).

The rule: an image is accepted when it has at least one proposal over the floor and every one of
them has confidence >= ``accept_conf``. One doubtful box is enough to leave the image to a person,
and an image with no box is never accepted: the model saw nothing there, which may be an object
it missed, and an empty label file would teach the next model that it is background.

The batch lands in the landing zone like a producer's (``images/``, ``labels/``, ``batch.json``
last) with ``source: model:v<version>``: intake gives its samples that label source, takes each
image as the labelling of its pool image (same sha256), and the dataset snapshot keeps them in the
train split only. Its id is a function of the batch and the champion's version, so a retry finds
its ``batch.json`` and writes nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pandas as pd

from cv_assets.lib.annotation.proposals import Proposals
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.formats.base import MODEL_PREFIX
from cv_assets.lib.ingest.labels import canonical_label_text
from cv_assets.lib.ingest.landing import MARKER, is_valid_batch_id
from cv_assets.lib.ingest.raw import DedupIndex

# A model label is trained on without a person seeing it, so by default only sure boxes pass.
ACCEPT_CONF = 0.8


def auto_accepts(confidences: Sequence[float], accept_conf: float = ACCEPT_CONF) -> bool:
    """Whether an image with these proposals (all over the floor) is accepted as labelled."""
    return len(confidences) > 0 and min(confidences) >= accept_conf


def accepted_images(boxes: pd.DataFrame, accept_conf: float = ACCEPT_CONF) -> list[str]:
    """The sha256 of every image of a proposals ``boxes`` table that ``auto_accepts``, sorted.

    An image without a row in ``boxes`` has no proposal, so it is never among them."""
    confs: dict[str, list[float]] = {}
    for sha, c in zip(boxes["sha256"], boxes["confidence"], strict=True):
        confs.setdefault(str(sha), []).append(float(c))
    return sorted(sha for sha, c in confs.items() if auto_accepts(c, accept_conf))


def yolo_rows(boxes: pd.DataFrame) -> dict[str, list[tuple[int, float, float, float, float]]]:
    """A proposals ``boxes`` table as YOLO rows (class id, cx, cy, w, h), by image sha256."""
    rows: dict[str, list[tuple[int, float, float, float, float]]] = {}
    cols = ["sha256", "class_id", "cx", "cy", "w", "h"]
    for sha, k, cx, cy, w, h in boxes[cols].itertuples(index=False):
        rows.setdefault(str(sha), []).append((int(k), float(cx), float(cy), float(w), float(h)))
    return rows


def model_source(champion_version: str) -> str:
    """``batch.json``'s source, and the samples' label source: ``model:v<version>``."""
    return f"{MODEL_PREFIX}v{champion_version}"


def auto_batch_id(batch_id: str, champion_version: str) -> str:
    """``auto-<batch>-v<version>``; a batch id too long for that is replaced by its digest."""
    bid = f"auto-{batch_id}-v{champion_version}"
    if is_valid_batch_id(bid):
        return bid
    return f"auto-{hashlib.sha256(batch_id.encode()).hexdigest()[:16]}-v{champion_version}"


@dataclass
class AutoAccepted:
    batch_id: str
    accepted: int  # images the rule accepted that are in the batch
    written: bool  # this call wrote the batch (False: nothing to land, or it was there already)
    already_labelled: int = 0  # accepted by the rule, but labelled since (by a person or a model)
    reencoded: int = 0  # accepted by the rule, but intake re-encoded the image: not relabellable


def land_auto_accepted(
    store: ArtifactStore,
    zone: ArtifactStore,
    proposals: Proposals,
    batch_id: str,
    champion_version: str,
    classes: Sequence[str],
    accept_conf: float,
    now: datetime,
) -> AutoAccepted:
    """Land the images of ``batch_id``'s pool that the rule accepts as one YOLO batch in ``zone``.

    Args:
        store: the artifact store that holds the pool's standardised images.
        zone: the landing zone, written exactly as a producer writes it.
        classes: the champion's class names; its class ids index them.
    """
    bid = auto_batch_id(batch_id, champion_version)
    chosen = set(accepted_images(proposals.boxes, accept_conf))
    rows = yolo_rows(proposals.boxes)
    table = proposals.images[["stem", "sha256", "image_uri"]]
    images = sorted((str(t), str(h), str(u)) for t, h, u in table.itertuples(index=False))
    out = AutoAccepted(bid, 0, False)
    if zone.exists(f"{bid}/{MARKER}"):  # landed by an earlier try: its images are labelled now
        out.accepted = sum(1 for _ in zone.list(f"{bid}/images/"))
        return out
    # A pool image labelled since (a round, an earlier champion's batch) keeps those labels: landed
    # again it would be a duplicate of the labelled image, not a labelling of the pool's.
    in_pool: set[str] = set()
    DedupIndex(store).seen_before(bid, in_pool)
    files: dict[str, bytes] = {}
    for stem, sha, uri in images:
        if sha not in chosen:
            continue
        if sha not in in_pool:
            out.already_labelled += 1
            continue
        data = store.get_bytes(store.key_of(uri))
        # Intake names a re-landed image's pool row only by its sha256; a re-encoded image has
        # other bytes, and would land as a second copy beside the one left in the pool.
        if hashlib.sha256(data).hexdigest() != sha:
            out.reencoded += 1
            continue
        files[f"images/{stem}{PurePosixPath(uri).suffix or '.jpg'}"] = data
        files[f"labels/{stem}.txt"] = canonical_label_text(rows[sha]).encode()
    out.accepted = len(files) // 2
    if not files:
        return out
    for name, data in files.items():
        zone.put_bytes(f"{bid}/{name}", data)
    marker = {
        "batch_id": bid,
        "classes": list(classes),
        "created_at": now.isoformat(),
        "source": model_source(champion_version),
        "format": "yolo",
        "labels": "full",
        "accept_conf": accept_conf,
    }
    # Written last: its presence is what makes the batch complete for the landing sensor.
    zone.put_bytes(f"{bid}/{MARKER}", json.dumps(marker, indent=1).encode())
    out.written = True
    return out
