"""Intake of one landed batch: every item becomes an accepted sample, an unlabelled image of the
pool, or a quarantine row.

Nothing is dropped: each landed item (an image, a label file with no image, a stray file, an
annotation file that does not parse) ends up in exactly one of the three tables, so
``accepted + unlabelled + quarantined == landed`` always holds. Where labels come from (YOLO
files, or an annotation tool's export) is ``sources.py``'s business. No
single file can fail the batch: whatever a file's name, size or bytes make the decoder raise
becomes a quarantine row naming the file and a rule. Only the store's own errors propagate (they
are transient, and the step retries). Images are streamed one at a time: memory stays flat
whatever the batch size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from cv_assets.lib.ingest.images import (
    DecodedImage,
    ImageLimits,
    ImageRejected,
    decode_image,
    image_stats,
    rejection,
    standard_image_bytes,
)
from cv_assets.lib.ingest.labels import LabelLimits, canonical_label_text
from cv_assets.lib.ingest.landing import Manifest, display_name
from cv_assets.lib.ingest.sources import (
    BatchFormat,
    ImageLabel,
    Item,
    LabelPlan,
    plan_items,
    plan_labels,
)

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    samples: list[dict[str, Any]] = field(default_factory=list)
    unlabelled: list[dict[str, Any]] = field(default_factory=list)  # the unlabelled pool
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    # Annotation-level accounting of an imported batch (empty for YOLO batches).
    annotation_problems: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, Any] = field(default_factory=dict)
    landed: int = 0
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        """Images taken in with labels."""
        return len(self.samples)

    @property
    def acceptance_rate(self) -> float:
        """Share of the landed items taken in, labelled or not (not quarantined)."""
        return (self.accepted + len(self.unlabelled)) / self.landed if self.landed else 0.0

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        return Counter(q["rule"] for q in self.quarantine).most_common(n)

    def check_accounted(self) -> None:
        """Raise unless every landed item is accepted, unlabelled or quarantined, exactly once."""
        if self.accepted + len(self.unlabelled) + len(self.quarantine) != self.landed:
            raise RuntimeError(
                f"intake lost track of items: {self.accepted} accepted + {len(self.unlabelled)} "
                f"unlabelled + {len(self.quarantine)} quarantined != {self.landed} landed"
            )


def box_features(
    boxes: Sequence[Sequence[float]], width: int, height: int, classes: Sequence[str]
) -> dict[str, float]:
    """Box count, and count, mean area and mean aspect (w/h in pixels) by class.

    Plain Python on purpose: an image holds a handful of boxes, where numpy's per-call overhead
    would cost more than the arithmetic.
    """
    nan = float("nan")
    sums = {k: [0, 0.0, 0.0] for k in range(len(classes))}
    for c, _cx, _cy, w, h in boxes:
        acc = sums[int(c)]
        acc[0] += 1
        acc[1] += w * h
        acc[2] += (w * width) / (h * height)
    n = len(boxes)
    out: dict[str, float] = {
        "n_boxes": float(n),
        "box_area_mean": sum(a[1] for a in sums.values()) / n if n else nan,
        "box_aspect_mean": sum(a[2] for a in sums.values()) / n if n else nan,
    }
    for k, name in enumerate(classes):
        cnt, area, aspect = sums[k]
        out[f"n_{name}"] = float(cnt)
        out[f"area_{name}"] = area / cnt if cnt else nan
        out[f"aspect_{name}"] = aspect / cnt if cnt else nan
    return out


def ingest_batch(
    batch_id: str,
    manifest: Manifest,
    read: Callable[[str], bytes],
    write: Callable[[str, bytes], str],
    seen: Mapping[str, str],
    classes: Sequence[str],
    limits: ImageLimits,
    link: Callable[[str, str], str] | None = None,
    label_limits: LabelLimits | None = None,
    pool: Set[str] = frozenset(),
    aliases: Mapping[str, str] | None = None,
    max_annotation_bytes: int = 64 * 2**20,
) -> IngestResult:
    """Validate, standardise and measure every landed item of a batch.

    Args:
        read: bytes of a file of the batch, by its path inside the batch.
        write: stores a standardised file under a key (``images/<stem>.jpg``), returns its URI.
        seen: sha256 -> ``batch/path`` of images accepted by earlier batches (duplicate check).
            In a correction batch such an image is accepted as a relabel, and its row names the
            sample it supersedes.
        link: stores a landed file unchanged under a key without re-writing its bytes (used for
            images already in standard form); falls back to ``write``.
        label_limits: a label file over ``max_bytes`` is quarantined unread (``label_too_large``),
            one with more than ``max_boxes`` lines unparsed (``too_many_boxes``).
        pool: digests among ``seen`` that are in the unlabelled pool: the same image landing with
            labels labels it (its row names the pool image it supersedes).
        aliases: other category names of an imported batch -> the platform's class names.
    """
    t0 = time.perf_counter()
    res = IngestResult()
    batch = BatchFormat.of(manifest.marker)
    items = plan_items(manifest, batch.fmt)
    plan = plan_labels(
        items, batch, read, classes, label_limits or LabelLimits(), aliases, max_annotation_bytes
    )
    items = [it for it in items if it.path not in plan.consumed]
    res.landed = len(items)
    _annotation_accounting(res, plan)
    accepted_here: dict[str, str] = {}
    corrected_at = str(manifest.marker.get("created_at") or "") if batch.correction else ""
    # Per-label provenance of an annotation round (annotator, task, project, round), by image.
    provenance = manifest.marker.get("provenance") if batch.round else None
    provenance = provenance if isinstance(provenance, dict) else {}

    def quarantine(item: Item, rule: str, reason: str) -> None:
        res.quarantine.append(
            {
                "item": display_name(item.path),
                "stem": display_name(item.stem),
                "rule": rule,
                "reason": reason,
            }
        )

    for it in items:
        if problem := plan.problems.get(it.path):
            quarantine(it, *problem)
            continue
        assert it.image is not None
        label = plan.labels.get(it.path)
        data = read(it.image.path)
        digest = hashlib.sha256(data).hexdigest() if data else ""
        earlier = seen.get(digest)
        # An image of the pool that now arrives with labels is labelled, not a duplicate.
        relabel = batch.correction or (label is not None and digest in pool)
        owner = accepted_here.get(digest) or (None if relabel else earlier)
        if owner:
            quarantine(it, "duplicate_image", f"{it.image.path}: same content as {owner}")
            continue
        try:
            decoded, std, stats = _standardise(it.image.path, data, limits, link is not None)
        except ImageRejected as rej:
            quarantine(it, rej.rule, rej.message)
            continue
        except Exception as e:  # any decoder or conversion error is this file's, not the batch's
            rej = rejection(it.image.path, e, "standardised")
            quarantine(it, rej.rule, rej.message)
            continue
        if label is not None and (mismatch := _size_mismatch(it, label, decoded)):
            quarantine(it, "annotation_size_mismatch", mismatch)
            continue
        std_key = f"images/{it.stem}.jpg"
        if std is None and link is not None:
            image_uri = link(it.image.path, std_key)
        else:
            image_uri = write(std_key, std if std is not None else data)
        accepted_here[digest] = f"{batch_id}/{it.image.path}"
        image = {
            "stem": it.stem,
            "source": it.image.path,
            "sha256": digest,
            "image_uri": image_uri,
            "width": decoded.width,
            "height": decoded.height,
            "standardised": not decoded.passthrough,
        }
        measured = {"batch_id": batch_id, "stem": it.stem, "sha256": digest}
        measured |= {"width": float(decoded.width), "height": float(decoded.height)} | stats
        if label is None:
            res.unlabelled.append(image | {"why": plan.incomplete.get(it.path, "")})
            res.features.append(measured | _no_box_features(classes))
            continue
        boxes = label.rows
        label_text = canonical_label_text(boxes).encode()
        if link is not None and label.raw is not None and label_text == label.raw:
            label_uri = link(label.file, f"labels/{it.stem}.txt")
        else:
            label_uri = write(f"labels/{it.stem}.txt", label_text)
        res.samples.append(
            image
            | {
                "label_uri": label_uri,
                "n_boxes": len(boxes),
                "label_sha256": hashlib.sha256(label_text).hexdigest(),
                "class_ids": " ".join(str(int(b[0])) for b in boxes),
                "supersedes": (earlier or "") if relabel else "",
                "corrected_at": corrected_at,
                "label_source": label.source,
                "label_file": label.file,
                "converted_boxes": label.converted,
                "crowd_regions": label.crowd,
                "provenance": _provenance(provenance.get(it.image.path)),
            }
        )
        res.features.append(measured | box_features(boxes, decoded.width, decoded.height, classes))
    res.seconds = time.perf_counter() - t0
    res.check_accounted()
    log.info(
        "%s: %d landed, %d accepted, %d unlabelled, %d quarantined in %.2fs",
        batch_id,
        res.landed,
        res.accepted,
        len(res.unlabelled),
        len(res.quarantine),
        res.seconds,
    )
    return res


def _size_mismatch(item: Item, label: ImageLabel, decoded: DecodedImage) -> str | None:
    """Why an annotation file's declared size cannot place its boxes on this image, if it can't."""
    if label.size is None:
        return None
    w, h = label.size
    if abs(w - decoded.width) <= 0.5 and abs(h - decoded.height) <= 0.5:
        return None
    return (
        f"{item.path} is {decoded.width}x{decoded.height} px, but {label.file} declares "
        f"{w:g}x{h:g}: its boxes cannot be placed on it"
    )


def _provenance(entry: Any) -> str:
    """One label's provenance as compact JSON ("" where the batch gives none)."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) if entry else ""


def _no_box_features(classes: Sequence[str]) -> dict[str, float]:
    """An unlabelled image's box features: unknown (NaN), not zero boxes."""
    return {k: float("nan") for k in box_features([], 1, 1, classes)}


def _annotation_accounting(res: IngestResult, plan: LabelPlan) -> None:
    imp = plan.imported
    if imp is None:
        return
    res.annotations = {
        "format": imp.format,
        "adapter": imp.adapter,
        "annotation_files": len(plan.consumed),
        "bad_annotation_files": len(imp.bad_files),
        "annotations_in": imp.seen,
        "boxes": imp.boxes,
        "annotations_quarantined": len(imp.problems),
        "crowd_regions": imp.crowd,
        "converted_boxes": imp.converted,
    }
    res.annotation_problems = [
        {"file": p.file, "annotation": p.where, "image": p.image, "rule": p.rule,
         "reason": p.reason}
        for p in imp.problems
    ]  # fmt: skip


def _standardise(
    path: str, data: bytes, limits: ImageLimits, can_link: bool
) -> tuple[DecodedImage, bytes | None, dict[str, float]]:
    """One decode: the image, its standard bytes (None: keep the landed file) and its stats."""
    decoded = decode_image(path, data, limits)
    try:
        keep = decoded.passthrough and can_link
        std = None if keep else standard_image_bytes(decoded, data, limits)
        return decoded, std, image_stats(decoded.image)
    finally:
        decoded.image.close()


SAMPLE_COLUMNS = [
    "stem",
    "source",
    "sha256",
    "image_uri",
    "label_uri",
    "width",
    "height",
    "n_boxes",
    "label_sha256",
    "class_ids",
    "standardised",
    "supersedes",  # in a correction batch: an earlier batch/path of the same image
    "corrected_at",  # in a correction batch: its batch.json created_at (newest correction wins)
    "label_source",  # provenance: human, import:<format>, review (later model:<version>)
    "provenance",  # an annotation round's label: JSON of annotator, task, project, round
    "label_file",  # the label or annotation file the boxes came from
    "converted_boxes",  # boxes converted from polygons or rotated boxes
    "crowd_regions",  # crowd regions excluded (never objects)
]
UNLABELLED_COLUMNS = [
    "stem",
    "source",
    "sha256",
    "image_uri",
    "width",
    "height",
    "standardised",
    "why",  # set when the image came with annotations that left an object unboxed
]
ANNOTATION_PROBLEM_COLUMNS = ["file", "annotation", "image", "rule", "reason"]
QUARANTINE_COLUMNS = ["item", "stem", "rule", "reason"]


def table_bytes(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """Rows as a parquet file (columns kept even when there are no rows)."""
    import io

    import pandas as pd

    df = pd.DataFrame.from_records(rows, columns=list(columns) if columns else None)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
