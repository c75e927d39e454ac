"""The records the ingest assets hand downstream (stored as JSON by the IO manager)."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from cv_assets.lib.core.store import StoredFile


class RawBatch(TypedDict):
    """``raw_batch``: where the immutable copy of a landed batch and its manifest are."""

    batch_id: str
    manifest_uri: str
    manifest_sha256: str  # the manifest's identity (its entries and marker), not the file's
    manifest_file_sha256: str
    files_key: str
    classes: list[str] | None
    n_files: int
    n_bytes: int
    seconds: float
    reused: bool


class ValidatedBatch(TypedDict):
    """``validated_batch``: the accepted samples and the quarantine table of one batch."""

    batch_id: str
    manifest_sha256: str
    samples: StoredFile
    quarantine: StoredFile
    images_prefix: str
    classes: list[str]
    # Absent from records written before the acceptance check existed: they count as accepted.
    acceptance_ok: NotRequired[bool]
    landed: int
    accepted: int  # images taken in with labels
    quarantined: int
    # Contract v2; absent from records written before it (yolo, full, nothing unlabelled).
    format: NotRequired[str]
    labels: NotRequired[str]  # full, partial or none
    unlabelled: NotRequired[int]  # images taken into the unlabelled pool
    unlabelled_table: NotRequired[StoredFile]
    annotations: NotRequired[dict[str, int | str]]  # an imported batch's annotation accounting
    annotation_problems: NotRequired[StoredFile]


class BatchFeatures(TypedDict):
    """``batch_features``: one row of image statistics per image taken in (labelled or not)."""

    batch_id: str
    features: StoredFile
    rows: int
