"""The record ``pre_annotations`` hands downstream (stored as JSON by the IO manager)."""

from __future__ import annotations

from typing import TypedDict

from cv_assets.lib.core.store import StoredFile


class PreAnnotations(TypedDict):
    """The champion's proposals for one batch's unlabelled images."""

    batch_id: str
    champion_version: str
    images: int  # unlabelled images scored
    boxes: int  # proposed boxes over the confidence floor
    floor: float
    threshold: float  # the decision threshold the uncertainty is measured against
    boxes_table: StoredFile
    images_table: StoredFile  # most uncertain first


class AnnotationRound(TypedDict):
    """A round of images pushed to Label Studio for a person to label."""

    round_id: str
    project: int  # the Label Studio project's id
    url: str  # where a person labels it
    pushed: int
    champion_version: str
    manifest: str  # URI of annotation/rounds/<round>/round.json
