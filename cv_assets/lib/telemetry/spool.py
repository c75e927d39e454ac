"""The telemetry spool: accepted events kept durably, once each, until they reach the store.

A SQLite database (``spool.db`` in WAL mode, ``synchronous=FULL``) under the spool folder holds one
row per event id. ``Spool.add`` inserts a batch in one transaction with ``INSERT OR IGNORE`` and
commits before it returns, so an event the service acknowledged survives a kill -9 of the process
and a retried batch is stored once. A sampled frame is written to the artifact store first, as
``telemetry/frames/<day>/<event_id>.jpg``, and the stored payload keeps its URI, not the base64.

``Spool.flush`` moves the rows to the artifact store as Parquet, grouped by day and model:
``telemetry/events/day=<YYYY-MM-DD>/model=<version>/part-<first>-<last>.parquet``, where first and
last are the spool's sequence numbers of the part's rows. A flush first *plans* its parts (each
row is assigned to one part key, in one transaction), then writes each part and marks its rows
flushed. A crash after a part was written but before it was marked leaves the plan in the
database: the next flush writes the same rows to the same key again, replacing the file, so a
row is never in two parts. The rows carry an ``AUTOINCREMENT`` sequence beside the ``event_id``
key (``UNIQUE``): plain SQLite rowids may be reused once rows are pruned, and a reused number
would name a part that already exists.

``Spool.prune`` deletes flushed rows received more than the dedup window ago (the service's
``dedup_window_s``, 7 days by default). The window is what the ``UNIQUE`` key deduplicates
over: an app resends a batch it saw no answer to (at-least-once), and a resent id whose row is
still here is counted as a duplicate. Once its row is pruned, the same id is stored again and
reaches a second part, so the window must outlast any app's retries. Rows not yet flushed,
planned or not, are never pruned. No ``VACUUM``: SQLite reuses the freed pages.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cv_assets.lib.core.store import ArtifactStore

log = logging.getLogger(__name__)

EVENTS_PREFIX = "telemetry/events"
FRAMES_PREFIX = "telemetry/frames"
MAX_PART_ROWS = 100_000  # a part stays a few MiB, whatever the backlog

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    day TEXT NOT NULL,
    model_version TEXT NOT NULL,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL,
    part TEXT,
    flushed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_pending ON events (flushed, part, day, model_version, seq);
"""

# The Parquet columns, in order: a fixed schema, so every part of every day reads as one table.
PARQUET_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
        ("received_at", pa.timestamp("ms", tz="UTC")),
        ("install_id", pa.string()),
        ("app_version", pa.string()),
        ("os", pa.string()),
        ("os_version", pa.string()),
        ("device_model", pa.string()),
        ("runtime", pa.string()),
        ("delegate", pa.string()),
        ("model_version", pa.string()),
        ("model_sha256", pa.string()),
        ("input_width", pa.int64()),
        ("input_height", pa.int64()),
        ("input_brightness", pa.float64()),
        ("input_contrast", pa.float64()),
        ("input_sharpness", pa.float64()),
        ("latency_ms", pa.float64()),
        ("sampling", pa.string()),
        ("consent_image", pa.bool_()),
        ("image_uri", pa.string()),
        ("n_detections", pa.int64()),
        ("max_confidence", pa.float64()),
        ("mean_confidence", pa.float64()),
        ("detections", pa.string()),
    ]
)
SCALARS = ("event_id", "install_id", "app_version", "os", "os_version", "device_model", "runtime",
           "delegate", "model_version", "model_sha256", "latency_ms", "sampling",
           "consent_image")  # fmt: skip


def part_key(day: str, model_version: str, first: int, last: int) -> str:
    return f"{EVENTS_PREFIX}/day={day}/model={model_version}/part-{first:012d}-{last:012d}.parquet"


def frame_key(day: str, event_id: str) -> str:
    return f"{FRAMES_PREFIX}/{day}/{event_id}.jpg"


def _iso_ms(text: str) -> int:
    """Milliseconds since the epoch of a contract time (``...Z`` or ``...+00:00``)."""
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def flat_row(payload: Mapping[str, Any], received_at: float) -> dict[str, Any]:
    """One event as its Parquet row: the scalars, ``input_*``, and the detections' summary."""
    dets = payload["detections"]
    confs = [d["confidence"] for d in dets]
    return (
        {k: payload[k] for k in SCALARS}
        | {f"input_{k}": v for k, v in payload["input"].items()}
        | {
            "time": _iso_ms(payload["time"]),
            "received_at": int(received_at * 1000),
            "image_uri": payload.get("image_uri"),
            "n_detections": len(dets),
            "max_confidence": max(confs) if confs else None,
            "mean_confidence": sum(confs) / len(confs) if confs else None,
            "detections": json.dumps(dets, separators=(",", ":")),
        }
    )


def parquet_bytes(rows: Iterable[Mapping[str, Any]]) -> bytes:
    rows = list(rows)
    cols = {f.name: pa.array([r[f.name] for r in rows], f.type) for f in PARQUET_SCHEMA}
    buf = io.BytesIO()
    pq.write_table(pa.table(cols, schema=PARQUET_SCHEMA), buf, compression="zstd")
    return buf.getvalue()


class Spool:
    """The spool under ``folder``; frames and parts go to ``store``.

    Safe to share between threads: one connection, one lock around each use of it. A frame or a
    part is written outside the lock.
    """

    def __init__(self, folder: str | Path, store: ArtifactStore) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._db = sqlite3.connect(
            self.folder / "spool.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, so an acknowledged batch survives a crash
        # of the machine too, not only of the process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Stores accepted events (``validate_batch``'s); ``(stored, duplicates)``.

        A frame (``image``, JPEG bytes) is written before the transaction that records its URI;
        an event id already stored keeps its row and its frame.
        """
        events = list(events)
        now = time.time()
        with_image = [e for e in events if e.get("image") is not None]
        seen: set[str] = set()
        if with_image:
            ids = [e["event_id"] for e in with_image]
            with self._lock:
                marks = ",".join("?" * len(ids))
                query = f"SELECT event_id FROM events WHERE event_id IN ({marks})"
                seen = {r[0] for r in self._db.execute(query, ids)}
        rows = []
        for e in events:
            payload = {k: v for k, v in e.items() if k != "image"}
            day = e["time"][:10]
            if e.get("image") is not None and e["event_id"] not in seen:
                seen.add(e["event_id"])  # a batch may repeat an id: its first frame is kept
                payload["image_uri"] = self.store.put_bytes(
                    frame_key(day, e["event_id"]), e["image"]
                ).uri
            elif e.get("image") is not None:
                payload["image_uri"] = self.store.uri(frame_key(day, e["event_id"]))
            rows.append(
                (e["event_id"], day, e["model_version"], now, json.dumps(payload, allow_nan=False))
            )
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO events (event_id, day, model_version, received_at, "
                    "payload) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            stored = self._db.total_changes - before
        return stored, len(rows) - stored

    def pending(self) -> int:
        """Events not yet in the artifact store."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events WHERE flushed = 0").fetchone()[0]

    def prune(self, older_than_s: float) -> int:
        """Deletes the flushed rows received more than ``older_than_s`` seconds ago; how many.

        A pruned event id no longer deduplicates: sent again, it is stored again. A row whose
        part is planned but not yet marked flushed stays, so a crashed flush still rewrites
        the whole part.
        """
        cutoff = time.time() - older_than_s
        with self._lock:
            pruned = self._db.execute(
                "DELETE FROM events WHERE flushed = 1 AND received_at < ?", (cutoff,)
            ).rowcount
        if pruned:
            log.info("telemetry: %d flushed events older than %gs pruned", pruned, older_than_s)
        return pruned

    def _plan(self) -> None:
        """Assigns every unplanned row to a part key, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                groups = self._db.execute(
                    "SELECT day, model_version FROM events WHERE part IS NULL "
                    "GROUP BY day, model_version"
                ).fetchall()
                for day, model in groups:
                    seqs = [
                        r[0]
                        for r in self._db.execute(
                            "SELECT seq FROM events WHERE part IS NULL AND day = ? AND "
                            "model_version = ? ORDER BY seq",
                            (day, model),
                        )
                    ]
                    for k in range(0, len(seqs), MAX_PART_ROWS):
                        first, last = seqs[k], seqs[min(k + MAX_PART_ROWS, len(seqs)) - 1]
                        self._db.execute(
                            "UPDATE events SET part = ? WHERE part IS NULL AND day = ? AND "
                            "model_version = ? AND seq BETWEEN ? AND ?",
                            (part_key(day, model, first, last), day, model, first, last),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def flush(self, store: ArtifactStore | None = None) -> list[str]:
        """Writes every unflushed event to ``store`` (the spool's own by default) as Parquet
        parts; the keys written, oldest first."""
        store = store or self.store
        with self._flush_lock:  # the timer and shutdown may both flush: one at a time
            self._plan()
            with self._lock:
                parts = [
                    r[0]
                    for r in self._db.execute(
                        "SELECT part FROM events WHERE flushed = 0 AND part IS NOT NULL "
                        "GROUP BY part ORDER BY MIN(seq)"
                    )
                ]
            written = []
            for key in parts:
                with self._lock:
                    rows = self._db.execute(
                        "SELECT payload, received_at FROM events WHERE part = ? ORDER BY seq",
                        (key,),
                    ).fetchall()
                data = parquet_bytes(flat_row(json.loads(p), at) for p, at in rows)
                store.put_bytes(key, data)
                with self._lock:
                    self._db.execute("UPDATE events SET flushed = 1 WHERE part = ?", (key,))
                written.append(key)
                log.info("telemetry: %d events flushed to %s", len(rows), store.uri(key))
            return written
