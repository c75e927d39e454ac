"""One day of field traffic against the champion: the events the service stored, the champion's
reference, each cohort's verdict, and the report written next to them.

The reference is the champion's view of its own frozen test split (``field_reference``), cached
per champion under ``telemetry/reference/``; the day's events are every Parquet part the ingest
service flushed under ``telemetry/events/day=<day>/``, all model versions together (the cohort
key holds the version). The report is ``telemetry/drift/day=<day>/v<champion>.json``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cv_assets.lib.core import layout
from cv_assets.lib.core.files import local_file, scratch_dir
from cv_assets.lib.core.store import ArtifactRef, ArtifactStore
from cv_assets.lib.monitoring.drift import DriftSettings
from cv_assets.lib.telemetry.field_drift import CohortDrift, field_drift, field_reference

EVENTS = "telemetry/events/"


def day_events(store: ArtifactStore, day: str) -> pd.DataFrame:
    """Every event the ingest service stored for ``day`` (``YYYY-MM-DD``), all model versions."""
    parts = sorted(k for k in store.list(f"{EVENTS}day={day}/") if k.endswith(".parquet"))
    frames = [pd.read_parquet(io.BytesIO(store.get_bytes(k))) for k in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def champion_reference(
    store: ArtifactStore, champion_key: str, dataset_version: str, detector_uri: str
) -> pd.DataFrame:
    """The champion on its own test-split images, built once per champion and cached."""
    key = f"telemetry/reference/{champion_key}.parquet"
    if store.exists(key):
        return pd.read_parquet(io.BytesIO(store.get_bytes(key)))
    with scratch_dir("field-reference") as tmp:
        cache = Path(tmp)
        samples = pd.read_parquet(
            local_file(store, store.uri(layout.dataset_samples(dataset_version)), cache)
        )
        test = pd.DataFrame(samples[samples["split"] == "test"]).sort_values(by="sha256")
        images = [str(local_file(store, u, cache)) for u in test["image_uri"]]
        if not images:
            raise ValueError(
                f"dataset {dataset_version} has no test split to take a reference from"
            )
        ref = field_reference(images, local_file(store, detector_uri, cache))
    buf = io.BytesIO()
    ref.to_parquet(buf, index=False)
    store.put_bytes(key, buf.getvalue())
    return ref


@dataclass
class FieldReport:
    day: str
    champion_version: str
    n_events: int
    cohorts: list[CohortDrift] = field(default_factory=list)
    report: ArtifactRef | None = None

    @property
    def flagged(self) -> list[CohortDrift]:
        return [c for c in self.cohorts if c.drifted]

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "champion_version": self.champion_version,
            "n_events": self.n_events,
            "drifted": bool(self.flagged),
            "drifted_cohorts": [c.cohort for c in self.flagged],
            "cohorts": [asdict(c) for c in self.cohorts],
            "report_uri": self.report.uri if self.report else None,
        }


def field_report(
    store: ArtifactStore,
    *,
    day: str,
    champion_version: str,
    champion_key: str,
    dataset_version: str,
    detector_uri: str,
    min_events: int = 200,
    settings: DriftSettings | None = None,
) -> FieldReport:
    """``day``'s cohorts against the champion's reference; the report is written when the day
    had events."""
    events = day_events(store, day)
    out = FieldReport(day, str(champion_version), len(events))
    if events.empty:
        return out
    ref = champion_reference(store, champion_key, dataset_version, detector_uri)
    out.cohorts = field_drift(events, ref, min_events=min_events, settings=settings)
    key = f"telemetry/drift/day={day}/v{champion_version}.json"
    out.report = store.put_bytes(key, json.dumps(out.as_dict(), indent=1).encode())
    return out
