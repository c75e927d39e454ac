"""Intake of one landed batch: every file becomes an accepted sample or a quarantine row.

Nothing is dropped: each landed item (an image, a label file with no image, or a stray file) ends
up in exactly one of the two tables, so ``accepted + quarantined == landed`` always holds. No
single file can fail the batch: whatever a file's name, size or bytes make the decoder raise
becomes a quarantine row naming the file and a rule. Only the store's own errors propagate (they
are transient, and the step retries). Images are streamed one at a time: memory stays flat
whatever the batch size.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
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
from cv_assets.lib.ingest.labels import (
    LabelFile,
    LabelLimits,
    canonical_label_text,
    label_table,
    parse_label_file,
    validate_labels,
)
from cv_assets.lib.ingest.landing import Manifest, ManifestEntry, clip, display_name
from cv_assets.lib.ingest.names import IMAGE_EXTS, LABEL_EXTS, name_problem

log = logging.getLogger(__name__)

# A batch whose batch.json source starts with this is a reviewed relabelling (cv-assets review
# import): its images were seen before on purpose, and its labels supersede the earlier ones.
CORRECTION_SOURCE_PREFIX = "review:"


@dataclass
class Item:
    """One landed thing that must be accounted for."""

    kind: str  # "sample", "orphan_label" or "stray"
    stem: str
    image: ManifestEntry | None = None
    label: ManifestEntry | None = None
    note: str = ""

    @property
    def path(self) -> str:
        entry = self.image or self.label
        return entry.path if entry else self.stem


def plan_items(manifest: Manifest) -> list[Item]:
    """Pair images with labels by stem; everything else is an orphan or a stray."""
    images: dict[str, ManifestEntry] = {}
    labels: dict[str, ManifestEntry] = {}
    items: list[Item] = []
    for e in manifest.entries:
        p = PurePosixPath(e.path)
        top = p.parts[0] if len(p.parts) > 1 else ""
        ext = p.suffix.lower()
        if len(p.parts) == 2 and top == "images" and ext in IMAGE_EXTS:
            if p.stem in images:
                items.append(
                    Item("stray", p.stem, image=e, note=f"same stem as {images[p.stem].path}")
                )
            else:
                images[p.stem] = e
        elif len(p.parts) == 2 and top == "labels" and ext in LABEL_EXTS:
            labels[p.stem] = e
        else:
            items.append(Item("stray", p.stem, image=e))
    for stem, img in images.items():
        items.append(Item("sample", stem, image=img, label=labels.pop(stem, None)))
    items.extend(Item("orphan_label", stem, label=lab) for stem, lab in labels.items())
    return sorted(items, key=lambda i: i.path)


@dataclass
class IngestResult:
    samples: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    landed: int = 0
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        return len(self.samples)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.landed if self.landed else 0.0

    def top_reasons(self, n: int = 5) -> list[tuple[str, int]]:
        return Counter(q["rule"] for q in self.quarantine).most_common(n)

    def check_accounted(self) -> None:
        """Raise unless every landed item is accepted or quarantined, exactly once."""
        if self.accepted + len(self.quarantine) != self.landed:
            raise RuntimeError(
                f"intake lost track of items: {self.accepted} accepted + {len(self.quarantine)} "
                f"quarantined != {self.landed} landed"
            )


def _entry_problem(item: Item) -> tuple[str, str] | None:
    """Problems visible from the manifest alone (names, links, unreadable files, pairing)."""
    for e in (item.image, item.label):
        if e is None:
            continue
        named = name_problem(e.path)
        if named:
            return named
        if e.kind == "symlink":
            return "symlink", f"{e.path}: symbolic link; links are never followed"
        if e.kind == "unreadable":
            return "unreadable", (
                f"{e.path}: could not be read when the batch was copied (permissions, or a file "
                "or folder gone or out of reach); not copied"
            )
        if e.kind != "file":
            return "not_a_regular_file", f"{e.path}: not a regular file ({e.kind})"
    if item.kind == "stray":
        why = item.note or "expected images/<stem>.jpg|.jpeg|.png or labels/<stem>.txt"
        return "unexpected_file", f"{item.path}: unexpected file ({why})"
    if item.kind == "orphan_label":
        return "label_without_image", f"{item.path}: label file with no image images/{item.stem}.*"
    if item.label is None:
        return "missing_label", f"{item.path}: no label file labels/{item.stem}.txt"
    return None


def is_correction(marker: Mapping[str, Any]) -> bool:
    """Whether ``batch.json`` declares a batch of corrected labels (``source: review:<batch>``)."""
    return str(marker.get("source") or "").startswith(CORRECTION_SOURCE_PREFIX)


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
) -> IngestResult:
    """Validate, standardise and measure every landed item of a batch.

    Args:
        read: bytes of a file of the batch, by its path inside the batch.
        write: stores a standardised file under a key (``images/<stem>.jpg``), returns its URI.
        seen: sha256 -> ``batch/path`` of images accepted by earlier batches (duplicate check).
            In a correction batch (``is_correction``) such an image is accepted as a relabel, and
            its row names the sample it supersedes.
        link: stores a landed file unchanged under a key without re-writing its bytes (used for
            images already in standard form); falls back to ``write``.
        label_limits: a label file over ``max_bytes`` is quarantined unread (``label_too_large``),
            one with more than ``max_boxes`` lines unparsed (``too_many_boxes``).
    """
    t0 = time.perf_counter()
    res = IngestResult()
    label_limits = label_limits or LabelLimits()
    items = plan_items(manifest)
    res.landed = len(items)

    # Problems that need no image decode: names, kinds, pairing, label size and box count.
    problems: dict[str, tuple[str, str]] = {}
    label_files: dict[str, LabelFile] = {}
    for it in items:
        problem = _entry_problem(it)
        if problem is None and it.label is not None:
            problem = _label_problem(it.label, read, label_limits, label_files)
        if problem is not None:
            problems[it.path] = problem
    errors = validate_labels(label_table(label_files.values()), classes)
    first_error: dict[str, tuple[str, str]] = {}
    for err in errors:
        first_error.setdefault(err.file, (err.rule, err.message))
    extra_errors = Counter(err.file for err in errors)

    accepted_here: dict[str, str] = {}
    correction = is_correction(manifest.marker)
    corrected_at = str(manifest.marker.get("created_at") or "") if correction else ""

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
        problem = problems.get(it.path)
        if problem:
            quarantine(it, *problem)
            continue
        assert it.image is not None and it.label is not None
        lf = label_files[it.label.path]
        if lf.unreadable:
            quarantine(it, "label_not_utf8", lf.unreadable)
            continue
        if it.label.path in first_error:
            n = extra_errors[it.label.path]
            more = f" (+{n - 1} more broken lines)" if n > 1 else ""
            rule, message = first_error[it.label.path]
            quarantine(it, rule, message + more)
            continue
        data = read(it.image.path)
        digest = hashlib.sha256(data).hexdigest() if data else ""
        owner = accepted_here.get(digest) or (None if correction else seen.get(digest))
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
        boxes = [r[3:] for r in lf.rows]
        std_key = f"images/{it.stem}.jpg"
        if std is None and link is not None:
            image_uri = link(it.image.path, std_key)
        else:
            image_uri = write(std_key, std if std is not None else data)
        label_text = canonical_label_text(boxes).encode()
        if link is not None and label_text == lf.raw:
            label_uri = link(it.label.path, f"labels/{it.stem}.txt")
        else:
            label_uri = write(f"labels/{it.stem}.txt", label_text)
        accepted_here[digest] = f"{batch_id}/{it.image.path}"
        res.samples.append(
            {
                "stem": it.stem,
                "source": it.image.path,
                "sha256": digest,
                "image_uri": image_uri,
                "label_uri": label_uri,
                "width": decoded.width,
                "height": decoded.height,
                "n_boxes": len(boxes),
                "label_sha256": hashlib.sha256(label_text).hexdigest(),
                "class_ids": " ".join(str(int(b[0])) for b in boxes),
                "standardised": not decoded.passthrough,
                "supersedes": seen.get(digest, "") if correction else "",
                "corrected_at": corrected_at,
            }
        )
        res.features.append(
            {"batch_id": batch_id, "stem": it.stem, "sha256": digest}
            | {"width": float(decoded.width), "height": float(decoded.height)}
            | stats
            | box_features(boxes, decoded.width, decoded.height, classes)
        )
    res.seconds = time.perf_counter() - t0
    res.check_accounted()
    log.info(
        "%s: %d landed, %d accepted, %d quarantined in %.2fs",
        batch_id,
        res.landed,
        res.accepted,
        len(res.quarantine),
        res.seconds,
    )
    return res


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


def _label_problem(
    entry: ManifestEntry,
    read: Callable[[str], bytes],
    limits: LabelLimits,
    parsed: dict[str, LabelFile],
) -> tuple[str, str] | None:
    """Size and box-count limits of a sample's label file, checked before parsing it.

    A file that passes is parsed into ``parsed`` (by path) for the batch-wide validation.
    """
    if entry.size > limits.max_bytes:
        return "label_too_large", (
            f"{entry.path}: {entry.size:,} bytes exceeds the label file limit of "
            f"{limits.max_bytes:,} (max_label_bytes); not parsed"
        )
    raw = read(entry.path)
    if len(raw) > limits.max_bytes:
        return "label_too_large", (
            f"{entry.path}: {len(raw):,} bytes exceeds the label file limit of "
            f"{limits.max_bytes:,} (max_label_bytes); not parsed"
        )
    try:
        lf = parse_label_file(entry.path, raw, limits.max_boxes)
    except Exception as e:  # parsing is total by design; a surprise is still this file's
        return "unreadable", f"{entry.path}: cannot be parsed ({type(e).__name__}: {clip(str(e))})"
    if lf.n_boxes > limits.max_boxes:
        return "too_many_boxes", (
            f"{entry.path}: {lf.n_boxes:,} boxes, more than the limit of {limits.max_boxes:,} "
            "an image (max_boxes_per_image); not parsed"
        )
    parsed[entry.path] = lf
    return None


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
]
QUARANTINE_COLUMNS = ["item", "stem", "rule", "reason"]


def table_bytes(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> bytes:
    """Rows as a parquet file (columns kept even when there are no rows)."""
    import io

    import pandas as pd

    df = pd.DataFrame.from_records(rows, columns=list(columns) if columns else None)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
