"""Collecting a round: what people completed in Label Studio lands as a ``labelstudio`` batch.

The order of writes is what keeps a collection from losing or duplicating labels:

1. the batch's images and its annotation file go to the landing zone, ``batch.json`` last (its
   presence is what makes a batch complete for the landing sensor);
2. then ``collected.json`` records the annotations landed.

A crash between 1 and 2 leaves a complete batch and no record of it; the next collection builds
the same batch id (a hash of the tasks and annotation versions it lands), finds its
``batch.json`` and only writes the record. Label Studio being down raises before anything is
written. A project deleted in Label Studio closes its round: nothing is left to collect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cv_assets.lib.annotation.labelstudio import LabelStudio
from cv_assets.lib.annotation.rounds import (
    annotation_key,
    chosen_annotation,
    collect,
    image_file,
    landing_batch,
)
from cv_assets.lib.core import layout
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.landing import MARKER

ANNOTATION_FILE = "annotations/labelstudio.json"


@dataclass
class RoundCollection:
    round_id: str
    counts: dict[str, int] = field(default_factory=dict)
    batch_id: str | None = None  # the batch landed by this pass, if any
    landed_now: int = 0  # tasks whose annotation this pass landed
    project_deleted: bool = False


def manifests(store: ArtifactStore) -> Iterator[dict[str, Any]]:
    """Every round's manifest, oldest first."""
    for key in sorted(store.list(layout.ROUNDS_PREFIX)):
        if key.endswith("/round.json"):
            yield json.loads(store.get_bytes(key))


def landed_so_far(store: ArtifactStore, round_id: str) -> dict[str, str]:
    key = layout.round_collected(round_id)
    return json.loads(store.get_bytes(key)) if store.exists(key) else {}


def collect_round(
    client: LabelStudio,
    store: ArtifactStore,
    zone: ArtifactStore,
    manifest: dict[str, Any],
    classes: Sequence[str],
    now: datetime,
) -> RoundCollection:
    """One collection pass over a round (raises ``LabelStudioError`` with nothing written)."""
    rid = manifest["round_id"]
    out = RoundCollection(rid)
    if not client.project_exists(int(manifest["project"])):
        out.project_deleted = True
        out.counts = {"pushed": len(manifest["tasks"]), "deleted": len(manifest["tasks"])}
        return out
    landed = landed_so_far(store, rid)
    found = collect(manifest, client.export(int(manifest["project"])), landed)
    out.counts = found.counts(len(manifest["tasks"]))
    if not found.to_land:
        return out
    bid, text, marker = landing_batch(manifest, found.to_land, classes, now)
    if not zone.exists(f"{bid}/{MARKER}"):
        uris = {e["file"]: e["image_uri"] for e in manifest["tasks"]}
        for task in found.to_land:
            name = image_file(task)
            zone.put_bytes(f"{bid}/images/{name}", store.get_bytes(store.key_of(uris[name])))
        zone.put_bytes(f"{bid}/{ANNOTATION_FILE}", text.encode())
        zone.put_bytes(f"{bid}/{MARKER}", json.dumps(marker, indent=1).encode())
    for task in found.to_land:
        ann = chosen_annotation(task)
        assert ann is not None
        landed[str(task["id"])] = annotation_key(ann)
    store.put_bytes(layout.round_collected(rid), json.dumps(landed, indent=1).encode())
    out.batch_id, out.landed_now = bid, len(found.to_land)
    out.counts["landed"] = len(landed)
    return out
