"""The landing zone: where labelled batches arrive, and how a complete batch is recognised.

A batch is a folder (or ``s3://`` prefix) ``<root>/<batch_id>/`` holding ``images/``, ``labels/``
and ``batch.json``. ``batch.json`` is written last, so a batch without it is never read. This module
lists complete batches cheaply (one directory scan plus one ``stat`` of each marker) and builds a
batch's manifest: every file with its size and sha256, symlinks recorded but never followed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cv_assets.lib.store import CHUNK, s3_client, split_s3_uri

MARKER = "batch.json"
BATCH_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_valid_batch_id(batch_id: str) -> bool:
    return BATCH_ID_RE.fullmatch(batch_id) is not None


@dataclass(frozen=True)
class ManifestEntry:
    """One landed file. ``kind`` is ``file``, ``symlink`` or ``special`` (fifo, socket, device)."""

    path: str
    kind: str
    size: int
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "size": self.size, "sha256": self.sha256}


@dataclass
class Manifest:
    """Every file of a landed batch, sorted by path, plus what ``batch.json`` declared."""

    batch_id: str
    marker: dict[str, Any]
    entries: list[ManifestEntry] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """Identity of the batch's content: its files and its class list.

        ``created_at`` and ``source`` are left out on purpose, so that re-sending the same files
        with a fresh ``batch.json`` is recognised as the same batch (a no-op), not a conflict.
        """
        body = {
            "classes": self.marker.get("classes"),
            "files": [e.as_dict() for e in self.entries],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "manifest_sha256": self.sha256,
            "marker": self.marker,
            "files": [e.as_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        entries = [ManifestEntry(**e) for e in d["files"]]
        return cls(batch_id=d["batch_id"], marker=d["marker"], entries=entries)


class BatchRefused(Exception):
    """A whole batch is refused; its files stay where they landed."""


def parse_marker(batch_id: str, raw: bytes, classes: Sequence[str]) -> dict[str, Any]:
    """``batch.json``, checked against the contract and the platform's class list."""
    where = f"{batch_id}/{MARKER}"
    try:
        marker = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BatchRefused(f"{where}: not valid JSON ({e})") from None
    if not isinstance(marker, dict):
        raise BatchRefused(f"{where}: expected a JSON object")
    if marker.get("batch_id") != batch_id:
        raise BatchRefused(
            f"{where}: batch_id {marker.get('batch_id')!r} does not match the folder "
            f"name {batch_id!r}"
        )
    got = marker.get("classes")
    if list(got or []) != list(classes):
        raise BatchRefused(
            f"{where}: classes {got} disagree with the platform's class list {list(classes)}; "
            "class ids would mean different things, so the whole batch is refused"
        )
    return marker


class LandingZone:
    """A local folder or an ``s3://`` prefix holding landed batches."""

    def __init__(self, root: str, s3_endpoint_url: str | None = None) -> None:
        self.root = root
        self._s3: Any = None
        if root.startswith("s3://"):
            self.bucket, self.prefix = split_s3_uri(root)
            self._s3 = s3_client(s3_endpoint_url)
        else:
            self.path = Path(root).expanduser()

    @property
    def is_s3(self) -> bool:
        return self._s3 is not None

    def _s3_key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def scan(self, known: set[str] | None = None) -> tuple[dict[str, str], list[str]]:
        """Complete batches as ``{batch_id: stamp}`` and the names that are not batch ids.

        The stamp changes whenever ``batch.json`` is rewritten (mtime locally, ETag on S3), which
        is how a re-landed batch is noticed without hashing anything. On S3 the marker of a batch
        in ``known`` is not re-read (that would be one request per batch per tick); its stamp is
        ``"known"``.
        """
        complete: dict[str, str] = {}
        ignored: list[str] = []
        if self._s3 is None:
            if not self.path.is_dir():
                return complete, ignored
            with os.scandir(self.path) as it:
                for entry in it:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if not is_valid_batch_id(entry.name):
                        ignored.append(entry.name)
                        continue
                    try:
                        st = os.stat(os.path.join(entry.path, MARKER), follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        complete[entry.name] = f"{st.st_mtime_ns}-{st.st_size}"
            return complete, ignored
        paginator = self._s3.get_paginator("list_objects_v2")
        base = self._s3_key("") + "/" if self.prefix else ""
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(base) :].rstrip("/")
                if not is_valid_batch_id(name):
                    ignored.append(name)
                elif known is not None and name in known:
                    complete[name] = "known"
                else:
                    etag = self._s3_etag(self._s3_key(name, MARKER))
                    if etag is not None:
                        complete[name] = etag
        return complete, ignored

    def _s3_etag(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self._s3.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read(self, batch_id: str, rel: str) -> bytes:
        if self._s3 is None:
            return (self.path / batch_id / rel).read_bytes()
        key = self._s3_key(batch_id, rel)
        return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def walk(self, batch_id: str) -> Iterator[tuple[str, str, int]]:
        """(relative path, kind, size) of every entry under the batch, symlinks not followed."""
        if self._s3 is None:
            base = self.path / batch_id
            for dirpath, dirs, files in os.walk(base, followlinks=False):
                for name in sorted(dirs):
                    full = os.path.join(dirpath, name)
                    if os.path.islink(full):
                        yield os.path.relpath(full, base), "symlink", 0
                for name in sorted(files):
                    full = os.path.join(dirpath, name)
                    st = os.lstat(full)
                    kind = (
                        "symlink"
                        if stat.S_ISLNK(st.st_mode)
                        else "file"
                        if stat.S_ISREG(st.st_mode)
                        else "special"
                    )
                    yield os.path.relpath(full, base), kind, st.st_size if kind == "file" else 0
            return
        paginator = self._s3.get_paginator("list_objects_v2")
        base = self._s3_key(batch_id) + "/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(base) :], "file", int(obj["Size"])

    def manifest(self, batch_id: str, classes: Sequence[str]) -> Manifest:
        """The batch's manifest (sha256 of every regular file). Raises ``BatchRefused``."""
        if not is_valid_batch_id(batch_id):
            raise BatchRefused(f"{batch_id!r} is not a valid batch id ({BATCH_ID_RE.pattern})")
        marker = parse_marker(batch_id, self.read(batch_id, MARKER), classes)
        entries = []
        for rel, kind, size in self.walk(batch_id):
            if rel == MARKER:
                continue
            digest = self._sha256(batch_id, rel) if kind == "file" else None
            entries.append(ManifestEntry(PurePosixPath(rel).as_posix(), kind, size, digest))
        entries.sort(key=lambda e: e.path)
        return Manifest(batch_id=batch_id, marker=marker, entries=entries)

    def _sha256(self, batch_id: str, rel: str) -> str:
        if self._s3 is not None:
            return hashlib.sha256(self.read(batch_id, rel)).hexdigest()
        h = hashlib.sha256()
        with open(self.path / batch_id / rel, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()


# --- the landing sensor's tick, without Dagster -------------------------------------------------


@dataclass
class LandingCursor:
    """The sensor's memory, kept small whatever the number of batches.

    Which batches are known is read from the instance's partition list (one query), not stored
    here. ``watermark`` is the newest ``batch.json`` mtime already handled, so a re-landed known
    batch (its marker rewritten) is noticed; ``refused`` holds refused batches with their stamp, so
    they are not re-read every tick, and are looked at again as soon as they change.
    """

    watermark: int = 0
    refused: dict[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"wm": self.watermark, "refused": self.refused}, sort_keys=True)

    @classmethod
    def loads(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        d = json.loads(raw)
        return cls(watermark=int(d.get("wm", 0)), refused=dict(d.get("refused", {})))


def _mtime(stamp: str) -> int | None:
    head = stamp.split("-", 1)[0]
    return int(head) if head.isdigit() else None


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
    recorded_manifest: Any,
    budget_s: float = 20.0,
) -> TickPlan:
    """What one sensor tick should do. Work grows with what is new, not with what is known.

    Args:
        known: batch ids that already have a partition.
        recorded_manifest: ``batch_id -> manifest sha256 | None`` of what was ingested before.
        budget_s: hashing stops after this long; the rest is ``deferred`` to the next tick.
    """
    import time

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
    candidates.sort(key=lambda c: (_mtime(c[1]) or 0, c[0]))
    watermark = cursor.watermark
    for i, (bid, stamp) in enumerate(candidates):
        if i > 0 and time.perf_counter() - t0 > budget_s:  # always make progress
            plan.deferred = [b for b, _ in candidates[i:]]
            pending = [_mtime(s) or 0 for _, s in candidates[i:]]
            watermark = min(watermark, min(pending) - 1) if pending else watermark
            break
        refused.pop(bid, None)
        try:
            sha = zone.manifest(bid, classes).sha256
            before = recorded_manifest(bid) if bid in known else None
            if before is not None and before != sha:
                raise BatchRefused(
                    f"batch {bid!r} was already ingested with manifest {before[:12]}; its files "
                    f"now hash to {sha[:12]}. Landed batches are immutable: land the changed "
                    "files under a new batch id"
                )
        except BatchRefused as e:
            refused[bid] = stamp
            plan.refusals.append((bid, stamp, str(e)))
        else:
            if before == sha:
                plan.unchanged.append(bid)
            else:
                plan.requests.append((bid, sha))
        mt = _mtime(stamp)
        if mt is not None:
            watermark = max(watermark, mt)
    plan.cursor = LandingCursor(watermark=watermark, refused=refused)
    return plan
