"""The audit set: randomly sampled field frames, labelled by people, never trained on.

A random sample is what makes live accuracy unbiased: low-confidence frames are the hard ones and
would understate it, and frames a team chose would overstate it. So the audit set holds only the
apps' ``random`` samples with a frame, and none of it goes to training (a frame learnt from would
no longer measure the model fairly).

- ``telemetry/audit/day=<day>.parquet``: the day's audit events, as the ingest service stored
  them (the app's own detections included), rewritten by each run of the day.
- ``telemetry/audit/labels/<event_id>.txt``: a person's labels of a frame, in the platform's YOLO
  form (class ids in the platform's order, normalised boxes). An empty file means "no objects".

``export_audit`` writes the frames still unlabelled as a folder any labelling tool takes in
(``images/<event_id>.jpg`` and ``classes.txt``); ``import_audit`` reads back the YOLO export
(``labels/<event_id>.txt``, what Label Studio, CVAT and Roboflow write) under intake's label rules:
a label that breaks one is quarantined with its file, line and rule, and nothing else of the file
is taken. Read = accepted + quarantined.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.ingest.labels import (
    canonical_label_text,
    label_table,
    parse_label_file,
    validate_labels,
)
from cv_assets.lib.telemetry.samples import RANDOM, sampled

AUDIT = "telemetry/audit"
LABELS = f"{AUDIT}/labels/"
MAX_LABEL_BYTES = 1024 * 1024


def audit_key(day: str) -> str:
    return f"{AUDIT}/day={day}.parquet"


def record_audit(store: ArtifactStore, day: str, events: pd.DataFrame) -> int:
    """Writes ``day``'s audit events (random samples with a frame); how many."""
    rows = sampled(events, RANDOM)
    if rows.empty:
        return 0
    buf = io.BytesIO()
    rows.to_parquet(buf, index=False)
    store.put_bytes(audit_key(day), buf.getvalue())
    return len(rows)


def audit_events(store: ArtifactStore) -> pd.DataFrame:
    """Every day's audit events together."""
    keys = sorted(k for k in store.list(f"{AUDIT}/") if k.endswith(".parquet"))
    frames = [pd.read_parquet(io.BytesIO(store.get_bytes(k))) for k in keys]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def audit_labels(store: ArtifactStore) -> dict[str, str]:
    """event id -> the label text people gave its frame."""
    out = {}
    for key in store.list(LABELS):
        if key.endswith(".txt"):
            out[Path(key).stem] = store.get_bytes(key).decode()
    return out


def export_audit(store: ArtifactStore, dest: Path, classes: list[str]) -> int:
    """Writes the audit frames nobody labelled yet into ``dest``; how many."""
    events, done = audit_events(store), set(audit_labels(store))
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "classes.txt").write_text("\n".join(classes) + "\n")
    n = 0
    pairs = [] if events.empty else zip(events["event_id"], events["image_uri"], strict=True)
    for eid, uri in pairs:
        if eid in done:
            continue
        (dest / "images" / f"{eid}.jpg").write_bytes(store.get_bytes(store.key_of(str(uri))))
        n += 1
    return n


@dataclass
class AuditImport:
    read: int = 0
    accepted: int = 0
    replaced: int = 0  # accepted over an earlier label of the same frame (a correction)
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    record: str | None = None  # the import's record in the store


def import_audit(store: ArtifactStore, src: Path, classes: list[str]) -> AuditImport:
    """Takes in ``src/labels/<event_id>.txt`` for audit frames; see the module's rules."""
    files = sorted((src / "labels").glob("*.txt")) if (src / "labels").is_dir() else []
    if not files:
        raise FileNotFoundError(f"{src}/labels/ holds no .txt label files (the YOLO export)")
    events = audit_events(store)
    known = set() if events.empty else {str(e) for e in events["event_id"]}
    before = set(audit_labels(store))
    out = AuditImport(read=len(files))
    for f in files:
        name = f"labels/{f.name}"
        if f.is_symlink() or not f.is_file():
            out.quarantined.append((name, "not a regular file (links are not followed)"))
            continue
        if f.stem not in known:
            out.quarantined.append((name, f"{f.stem} is not an audit frame's event id"))
            continue
        raw = f.read_bytes()
        if len(raw) > MAX_LABEL_BYTES:
            out.quarantined.append((name, f"larger than {MAX_LABEL_BYTES:,} bytes"))
            continue
        parsed = parse_label_file(name, raw)
        if parsed.unreadable:
            out.quarantined.append((name, parsed.unreadable))
            continue
        errors = validate_labels(label_table([parsed]), classes)
        if errors:
            out.quarantined.append((name, "; ".join(e.message for e in errors)))
            continue
        rows = [r[3:] for r in parsed.rows]
        store.put_bytes(f"{LABELS}{f.stem}.txt", canonical_label_text(rows).encode())
        out.accepted += 1
        out.replaced += f.stem in before
    now = datetime.now(UTC)
    record = {
        "at": now.isoformat(),
        "source": str(src),
        "read": out.read,
        "accepted": out.accepted,
        "replaced": out.replaced,
        "quarantined": [{"file": f, "why": w} for f, w in out.quarantined],
    }
    key = f"{AUDIT}/imports/{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    out.record = store.put_bytes(key, json.dumps(record, indent=1).encode()).uri
    return out
