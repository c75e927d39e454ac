"""The record ``training_dataset`` hands downstream (stored as JSON by the IO manager)."""

from __future__ import annotations

from typing import TypedDict

from cv_assets.lib.core.store import StoredFile


class TrainingDataset(TypedDict):
    """One dataset version: its samples table, its data.yaml and what it holds, by split."""

    version: str
    classes: list[str]
    batches: list[str]
    excluded_batches: list[str]  # validated, but below the acceptance rate
    counts: dict[str, int]  # images by split
    class_counts: dict[str, dict[str, int]]  # boxes by split, then class
    images: int
    samples: StoredFile
    data_yaml: StoredFile
    data_yaml_key: str
