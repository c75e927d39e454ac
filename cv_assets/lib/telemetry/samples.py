"""A day's sampled field frames into the loop: low-confidence frames to the unlabelled pool, random
ones to the audit set.

An app samples an event as ``low_confidence`` (its best detection scored under the app's
threshold) or ``random`` (a fixed share of the rest), and attaches the frame only when the user
consented (the contract). For one day of stored events:

- **Low-confidence frames land in the landing zone** as one unlabelled batch, written exactly as a
  producer writes one (``field-<day>-<digest>/images/<event_id>.jpg`` and ``batch.json`` with
  ``labels: none``). ``landing_sensor`` takes it to intake like any batch, which validates,
  standardises and deduplicates it; its images join the unlabelled pool that the annotation round
  draws from. These are the frames the model is least sure of: the ones worth a person's time.
  A second run of the day (late events) lands only the frames no earlier run landed; the landed
  event ids are kept in ``telemetry/samples/day=<day>/landed.json``, written after the batch.
- **Random frames are the audit set** (``lib/telemetry/audit.py``): an unbiased sample of what the
  phones see, kept out of training, on which people's labels measure the live accuracy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.landing import MARKER

LOW_CONFIDENCE, RANDOM = "low_confidence", "random"
SAMPLES = "telemetry/samples"
FIELD_SOURCE = "telemetry"


def sampled(events: pd.DataFrame, reason: str) -> pd.DataFrame:
    """The events sampled for ``reason`` that carry a frame, oldest first, once per event id."""
    if events.empty:
        return events
    has = events["sampling"].eq(reason) & events["image_uri"].notna()
    rows = pd.DataFrame(events[has]).sort_values(by=["time", "event_id"])
    return pd.DataFrame(rows.drop_duplicates(subset="event_id"))


def field_batch_id(day: str, event_ids: list[str]) -> str:
    """``field-<day>-<digest of the event ids>``: the same frames always make the same batch."""
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:10]
    return f"field-{day}-{digest}"


def landed_key(day: str) -> str:
    return f"{SAMPLES}/day={day}/landed.json"


def landed_before(store: ArtifactStore, day: str) -> set[str]:
    """Event ids whose frames an earlier run of ``day`` landed."""
    key = landed_key(day)
    if not store.exists(key):
        return set()
    return set(json.loads(store.get_bytes(key))["event_ids"])


@dataclass
class LandedFrames:
    """What one run did with a day's low-confidence frames."""

    sampled: int  # low-confidence events of the day
    with_frame: int  # ... that carry a frame (the user consented)
    landed: int  # frames this run landed
    landed_before: int  # frames an earlier run of the day landed
    batch_id: str | None  # the batch this run landed (None: nothing new)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def land_low_confidence(
    store: ArtifactStore,
    zone: ArtifactStore,
    day: str,
    events: pd.DataFrame,
    classes: list[str],
    now: datetime,
) -> LandedFrames:
    """Land ``day``'s low-confidence frames not landed before as one unlabelled batch in ``zone``.

    Args:
        store: the artifact store holding the frames (``telemetry/frames/``).
        zone: the landing zone, written as a producer writes it: images first, ``batch.json``
            last (the batch is complete when its marker is there).
        classes: the platform's class names (``batch.json`` declares them).
    """
    n_sampled = int(events["sampling"].eq(LOW_CONFIDENCE).sum()) if not events.empty else 0
    rows = sampled(events, LOW_CONFIDENCE)
    before = landed_before(store, day)
    records = rows.to_dict("records") if not rows.empty else []
    new = [r for r in records if str(r["event_id"]) not in before]
    out = LandedFrames(n_sampled, len(records), 0, len(records) - len(new), None)
    if not new:
        return out
    ids = [str(r["event_id"]) for r in new]
    bid = field_batch_id(day, ids)
    # A run killed after the marker but before landed.json: the batch is whole, keep it as is.
    whole = zone.exists(f"{bid}/{MARKER}")
    cohorts: dict[str, dict[str, Any]] = {}
    for r in new:
        name = f"images/{r['event_id']}.jpg"
        if not whole:
            zone.put_bytes(f"{bid}/{name}", store.get_bytes(store.key_of(str(r["image_uri"]))))
        conf = r["max_confidence"]
        cohorts[name] = {k: str(r[k]) for k in ("event_id", "model_version", "device_model",
                                                 "app_version")}  # fmt: skip
        cohorts[name]["max_confidence"] = None if pd.isna(conf) else float(conf)
    marker = {
        "batch_id": bid,
        "classes": list(classes),
        "created_at": now.isoformat(),
        "source": f"{FIELD_SOURCE}:{day}",
        "format": "yolo",
        "labels": "none",
        "field": {"day": day, "sampling": LOW_CONFIDENCE, "frames": cohorts},
    }
    if not whole:
        zone.put_bytes(f"{bid}/{MARKER}", json.dumps(marker, indent=1).encode())
    record = {"day": day, "event_ids": sorted(before | set(ids)), "batches": [bid]}
    if store.exists(landed_key(day)):
        record["batches"] = json.loads(store.get_bytes(landed_key(day)))["batches"] + [bid]
    store.put_bytes(landed_key(day), json.dumps(record, indent=1).encode())
    out.landed, out.batch_id = len(ids), bid
    return out
