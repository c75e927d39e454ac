"""One tick of ``landing_sensor``, planned without Dagster: which complete batches are new, which
were re-landed or edited in place since they were ingested (refused, with the reason), and the
cursor that keeps the next tick cheap whatever the number of batches.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cv_assets.lib.ingest.landing import (
    MAX_CLASSES,
    BatchRefused,
    LandingZone,
    Manifest,
    changed_batch_refusal,
)


@dataclass
class LandingCursor:
    """The sensor's memory, kept small whatever the number of batches.

    Which batches are known is read from the instance's partition list (one query), not stored
    here. ``watermark`` is the newest ``batch.json`` mtime already handled, so a re-landed known
    batch (its marker rewritten) is noticed; ``refused`` holds refused batches with their stamp, so
    they are not re-read every tick, and are looked at again as soon as they change; ``sweep`` is
    where the round-robin check of known batches' files for in-place edits stopped.
    """

    watermark: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    sweep: str = ""  # the last known batch whose files were checked for in-place edits

    def dumps(self) -> str:
        body: dict[str, Any] = {"wm": self.watermark, "refused": self.refused}
        if self.sweep:
            body["sweep"] = self.sweep
        return json.dumps(body, sort_keys=True)

    @classmethod
    def loads(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        d = json.loads(raw)
        return cls(
            watermark=int(d.get("wm", 0)),
            refused=dict(d.get("refused", {})),
            sweep=str(d.get("sweep", "")),
        )


def _mtime(stamp: str) -> int | None:
    head = stamp.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _sweep(
    zone: LandingZone,
    complete: dict[str, str],
    known: set[str],
    refused: dict[str, str],
    after: str,
    budget_s: float,
) -> tuple[list[tuple[str, str]], str]:
    """Known batches holding a file newer than their stamp (edited in place after landing).

    A file rewritten in place changes no folder's mtime, so the stamp cannot see it; this checks
    the files themselves (one ``lstat`` each, ~10-25 us), round-robin over the known batches from
    ``after``, for at most ``budget_s`` a tick (at least one batch). Returns ``(batch_id, stamp)``
    pairs, the stamp carrying the newest file's mtime (so a batch stays refused until it changes
    again), and the last batch checked.
    """
    ids = sorted(b for b in known if _mtime(complete.get(b, "")) is not None)
    if zone.is_s3 or not ids or budget_s <= 0:
        return [], after
    t0 = time.perf_counter()
    start = bisect.bisect_right(ids, after)
    found: list[tuple[str, str]] = []
    last, checked = after, 0
    for bid in ids[start:] + ids[:start]:
        if checked and time.perf_counter() - t0 > budget_s:
            break
        stamp = complete[bid]
        newest, _n = zone.newest_mtime(bid)
        last, checked = bid, checked + 1
        if newest > (_mtime(stamp) or 0):
            edited = f"{newest}-{stamp.split('-', 1)[1]}"
            if refused.get(bid) != edited:
                found.append((bid, edited))
    return found, last


@dataclass
class TickPlan:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (batch_id, manifest sha256)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (batch_id, stamp, why)
    unchanged: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    cursor: LandingCursor = field(default_factory=LandingCursor)


def plan_landing_tick(
    zone: LandingZone,
    classes: Sequence[str],
    cursor: LandingCursor,
    known: set[str],
    recorded_manifest: Callable[[str], str | None],
    budget_s: float = 20.0,
    recorded_files: Callable[[str], Manifest | None] | None = None,
    max_classes: int = MAX_CLASSES,
    sweep_s: float = 0.2,
) -> TickPlan:
    """What one sensor tick should do. Work grows with what is new, not with what is known.

    Args:
        known: batch ids that already have a partition.
        recorded_manifest: ``batch_id -> manifest sha256 | None`` of what was ingested before.
        budget_s: hashing stops after this long; the rest is ``deferred`` to the next tick.
        recorded_files: ``batch_id -> Manifest | None``, the raw copy's manifest; read only when
            a known batch has changed, so that the refusal can say which files changed.
        max_classes: ``batch.json`` declaring more classes is refused.
        sweep_s: time per tick spent checking known batches' files for in-place edits
            (``_sweep``): about 10,000 files at ~20 us each.
    """
    t0 = time.perf_counter()
    complete, ignored = zone.scan(known)
    plan = TickPlan(ignored=ignored)
    refused = {k: v for k, v in cursor.refused.items() if k in complete}
    candidates: list[tuple[str, str]] = []
    for bid, stamp in complete.items():
        mt = _mtime(stamp)
        if bid in refused and refused[bid] == stamp:
            continue
        if bid not in known or (mt is not None and mt > cursor.watermark):
            candidates.append((bid, stamp))
    queued = {b for b, _ in candidates}
    edited, sweep = _sweep(zone, complete, known - queued, refused, cursor.sweep, sweep_s)
    candidates.extend(edited)
    from_sweep = {b for b, _ in edited}
    candidates.sort(key=lambda c: (_mtime(c[1]) or 0, c[0]))
    watermark = cursor.watermark
    for i, (bid, stamp) in enumerate(candidates):
        if i > 0 and time.perf_counter() - t0 > budget_s:  # always make progress
            plan.deferred = [b for b, _ in candidates[i:]]
            pending = [_mtime(s) or 0 for b, s in candidates[i:] if b not in from_sweep]
            watermark = min(watermark, min(pending) - 1) if pending else watermark
            if from_sweep & set(plan.deferred):
                sweep = cursor.sweep  # look at the deferred edited batches again next tick
            break
        refused.pop(bid, None)
        before = None
        try:
            manifest = zone.manifest(bid, classes, max_classes)
            sha = manifest.sha256
            before = recorded_manifest(bid) if bid in known else None
            if before is not None and before != sha:
                old = recorded_files(bid) if recorded_files is not None else None
                raise BatchRefused(changed_batch_refusal(bid, old, manifest))
        except BatchRefused as e:
            refused[bid] = stamp
            plan.refusals.append((bid, stamp, str(e)))
        else:
            if before == sha:
                plan.unchanged.append(bid)
            else:
                plan.requests.append((bid, sha))
        mt = _mtime(stamp)
        if mt is not None and bid not in from_sweep:
            watermark = max(watermark, mt)
    plan.cursor = LandingCursor(watermark=watermark, refused=refused, sweep=sweep)
    return plan
