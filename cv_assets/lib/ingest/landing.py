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

from cv_assets.lib.core.store import CHUNK, s3_client, split_s3_uri

MARKER = "batch.json"
BATCH_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The default of IntakeConfig.max_classes: batch.json may not declare more classes than this.
MAX_CLASSES = 1000
# Landing contract v2: batch.json's "format" (where the labels are, in which tool's shape) and
# "labels" (full: every image labelled; partial: some; none: unlabelled frames).
FORMATS = ("yolo", "ultralytics", "coco", "voc", "cvat", "labelstudio")
LABELS = ("full", "partial", "none")
# What a message quotes from untrusted input (names, class lists, file lists) is cut to this.
QUOTE_CHARS = 200
QUOTE_ITEMS = 10


def is_valid_batch_id(batch_id: str) -> bool:
    return BATCH_ID_RE.fullmatch(batch_id) is not None


def display_name(name: str) -> str:
    """A landed name as text any table, log or JSON can hold.

    Local names that are not UTF-8 arrive as surrogate escapes (``os.fsdecode``); their bytes are
    shown as ``\\xff``. Other unprintable characters (newlines, controls) are escaped the same
    way. A printable UTF-8 name is returned unchanged.
    """
    if name.isprintable():
        return name
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def brief_list(items: Sequence[Any], limit: int = QUOTE_ITEMS, chars: int = QUOTE_CHARS) -> str:
    """At most ``limit`` items (and about ``chars`` characters), then ``... (N more)``.

    A producer controls what is quoted (a 100,000-class list, thousands of changed files); a
    refusal, a log line and ``cv-assets status`` quote a bounded excerpt, never all of it.
    """
    shown: list[str] = []
    used = 0
    for item in items[:limit]:
        text = clip(display_name(str(item)), chars)
        if shown and used + len(text) > chars:
            break
        shown.append(text)
        used += len(text) + 2
    more = len(items) - len(shown)
    return ", ".join(shown) + (f", ... ({more:,} more)" if more else "")


@dataclass(frozen=True)
class ManifestEntry:
    """One landed file.

    ``kind`` is ``file``, ``symlink``, ``special`` (fifo, socket, device) or ``unreadable`` (a
    file that could not be read, or a folder that could not be listed, when the batch was hashed).
    """

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


def parse_marker(
    batch_id: str, raw: bytes, classes: Sequence[str], max_classes: int = MAX_CLASSES
) -> dict[str, Any]:
    """``batch.json``, checked against the contract and the platform's class list.

    Args:
        max_classes: a marker declaring more classes is refused before its list is compared or
            quoted (``IntakeConfig.max_classes``).
    """
    where = f"{batch_id}/{MARKER}"
    try:
        marker = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BatchRefused(f"{where}: not valid JSON ({clip(str(e))})") from None
    if not isinstance(marker, dict):
        raise BatchRefused(f"{where}: expected a JSON object")
    if marker.get("batch_id") != batch_id:
        raise BatchRefused(
            f"{where}: batch_id {clip(repr(marker.get('batch_id')))} does not match the folder "
            f"name {batch_id!r}"
        )
    fmt, labels = marker.get("format", "yolo"), marker.get("labels", "full")
    if fmt not in FORMATS:
        raise BatchRefused(
            f"{where}: format {clip(json.dumps(fmt))} is not one of {', '.join(FORMATS)}"
        )
    if labels not in LABELS:
        raise BatchRefused(
            f"{where}: labels {clip(json.dumps(labels))} is not one of {', '.join(LABELS)}"
        )
    got = marker.get("classes")
    if not isinstance(got, list) or not all(isinstance(c, str) for c in got):
        raise BatchRefused(f"{where}: classes must be a list of names, got {clip(json.dumps(got))}")
    if len(got) > max_classes:
        raise BatchRefused(
            f"{where}: declares {len(got):,} classes, more than the limit of {max_classes:,} "
            f"(max_classes): {brief_list(got)}"
        )
    # Only YOLO files name classes by position; every other format names them, and an adapter
    # maps each name to the platform's list (so the list in batch.json is informative there).
    if fmt == "yolo" and got != list(classes):
        raise BatchRefused(
            f"{where}: classes [{brief_list([repr(c) for c in got])}] disagree with the "
            f"platform's class list [{brief_list([repr(c) for c in classes])}]; class ids would "
            "mean different things, so the whole batch is refused"
        )
    return marker


def manifest_changes(before: Manifest, after: Manifest) -> str:
    """What differs between a batch's recorded manifest and its files now, file by file."""
    old = {e.path: e for e in before.entries}
    new = {e.path: e for e in after.entries}
    changed = sorted(p for p in old.keys() & new.keys() if old[p] != new[p])
    parts = [
        f"{what} {len(paths):,} ({brief_list(paths)})"
        for what, paths in (
            ("changed", changed),
            ("added", sorted(new.keys() - old.keys())),
            ("removed", sorted(old.keys() - new.keys())),
        )
        if paths
    ]
    if before.marker.get("classes") != after.marker.get("classes"):
        parts.append("classes in batch.json changed")
    return "; ".join(parts) or "manifest changed"


def changed_batch_refusal(batch_id: str, before: Manifest | None, after: Manifest) -> str:
    """The refusal of a batch id that comes back with different files."""
    if before is None:
        what = f"its files no longer match the manifest recorded then ({after.sha256[:12]} now)"
    else:
        what = f"since then, files {manifest_changes(before, after)}"
    return (
        f"batch {batch_id!r} was already ingested; {what}. Landed batches are immutable: the "
        "raw copy keeps what was ingested; land the changed files under a new batch id"
    )


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

        Locally the stamp is the newest mtime of ``batch.json``, the batch folder, ``images/`` and
        ``labels/`` (plus the marker's size): it changes when ``batch.json`` is rewritten and when
        a file is added, removed or replaced (renamed over) after landing, which is how a changed
        batch is noticed without hashing anything (four ``stat`` calls a batch). A file rewritten
        in place keeps its folder's mtime; touching ``batch.json`` makes the sensor look again.
        A batch folder that is a symbolic link is listed with a ``link:`` stamp, so that it is
        refused with a reason rather than skipped. On S3 the stamp is the marker's ETag, and the
        marker of a batch in ``known`` is not re-read (that would be one request per batch per
        tick); its stamp is ``"known"``.
        """
        complete: dict[str, str] = {}
        ignored: list[str] = []
        if self._s3 is None:
            if not self.path.is_dir():
                return complete, ignored
            with os.scandir(self.path) as it:
                for entry in it:
                    if entry.is_symlink():
                        if is_valid_batch_id(entry.name):
                            st = entry.stat(follow_symlinks=False)
                            complete[entry.name] = f"link:{st.st_mtime_ns}"
                        else:
                            ignored.append(display_name(entry.name))
                        continue
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if not is_valid_batch_id(entry.name):
                        ignored.append(display_name(entry.name))
                        continue
                    stamp = self._local_stamp(entry.path)
                    if stamp is not None:
                        complete[entry.name] = stamp
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

    @staticmethod
    def _local_stamp(batch_dir: str) -> str | None:
        try:
            st = os.stat(os.path.join(batch_dir, MARKER), follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        newest = st.st_mtime_ns
        for sub in ("", "images", "labels"):
            try:
                newest = max(
                    newest, os.stat(os.path.join(batch_dir, sub), follow_symlinks=False).st_mtime_ns
                )
            except OSError:
                continue
        return f"{newest}-{st.st_size}"

    def newest_mtime(self, batch_id: str) -> tuple[int, int]:
        """(newest mtime in ns, number of entries) over everything under a local batch folder,
        ``batch.json`` and links included, nothing followed. ``(0, 0)`` on S3."""
        if self._s3 is not None:
            return 0, 0
        newest, n = 0, 0
        stack = [str(self.path / batch_id)]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        n += 1
                        newest = max(newest, st.st_mtime_ns)
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(entry.path)
            except OSError:
                continue
        return newest, n

    def refuse_linked_batch(self, batch_id: str) -> None:
        """Raise ``BatchRefused`` if the batch folder is a symbolic link (never followed)."""
        if self._s3 is None and os.path.islink(self.path / batch_id):
            target = clip(display_name(os.readlink(self.path / batch_id)))
            raise BatchRefused(
                f"{batch_id}: the batch folder is a symbolic link (to {target}); links are never "
                "followed, so the batch is refused: land its files in a real folder"
            )

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

    def read_landed(self, batch_id: str, rel: str) -> bytes | None:
        """A landed file's bytes, or ``None`` if the local file cannot be read (permissions, a
        path over the system's limit, a file gone since the listing). On S3 errors propagate: they
        are transient, and the step retries."""
        if self._s3 is not None:
            return self.read(batch_id, rel)
        try:
            return self.read(batch_id, rel)
        except OSError:
            return None

    def walk(self, batch_id: str) -> Iterator[tuple[str, str, int]]:
        """(relative path, kind, size) of every entry under the batch, symlinks not followed.

        A folder that cannot be listed is yielded as ``unreadable`` (``os.walk`` would skip it
        without a word).
        """
        if self._s3 is None:
            base = self.path / batch_id
            failed: list[OSError] = []
            for dirpath, dirs, files in os.walk(base, onerror=failed.append, followlinks=False):
                for name in sorted(dirs):
                    full = os.path.join(dirpath, name)
                    if os.path.islink(full):
                        yield os.path.relpath(full, base), "symlink", 0
                for name in sorted(files):
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(full)
                    except OSError:
                        yield os.path.relpath(full, base), "unreadable", 0
                        continue
                    kind = (
                        "symlink"
                        if stat.S_ISLNK(st.st_mode)
                        else "file"
                        if stat.S_ISREG(st.st_mode)
                        else "special"
                    )
                    yield os.path.relpath(full, base), kind, st.st_size if kind == "file" else 0
                yield from _unlisted(failed, base)
            yield from _unlisted(failed, base)
            return
        paginator = self._s3.get_paginator("list_objects_v2")
        base = self._s3_key(batch_id) + "/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(base) :], "file", int(obj["Size"])

    def manifest(
        self, batch_id: str, classes: Sequence[str], max_classes: int = MAX_CLASSES
    ) -> Manifest:
        """The batch's manifest (sha256 of every regular file). Raises ``BatchRefused``."""
        if not is_valid_batch_id(batch_id):
            raise BatchRefused(
                f"{clip(repr(batch_id))} is not a valid batch id ({BATCH_ID_RE.pattern})"
            )
        self.refuse_linked_batch(batch_id)
        marker = parse_marker(batch_id, self.read(batch_id, MARKER), classes, max_classes)
        entries = []
        for rel, kind, size in self.walk(batch_id):
            if rel == MARKER:
                continue
            digest = self._sha256(batch_id, rel) if kind == "file" else None
            if kind == "file" and digest is None:
                kind, size = "unreadable", 0
            entries.append(ManifestEntry(PurePosixPath(rel).as_posix(), kind, size, digest))
        entries.sort(key=lambda e: e.path)
        return Manifest(batch_id=batch_id, marker=marker, entries=entries)

    def _sha256(self, batch_id: str, rel: str) -> str | None:
        """sha256 of a landed file; ``None`` if the local file cannot be read."""
        if self._s3 is not None:
            return hashlib.sha256(self.read(batch_id, rel)).hexdigest()
        h = hashlib.sha256()
        try:
            with open(self.path / batch_id / rel, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        except OSError:
            return None
        return h.hexdigest()


def _unlisted(failed: list[OSError], base: Path) -> Iterator[tuple[str, str, int]]:
    """The folders ``os.walk`` could not list, as ``unreadable`` entries (drains ``failed``)."""
    while failed:
        err = failed.pop(0)
        where = os.fsdecode(err.filename) if err.filename else str(base)
        yield os.path.relpath(where, base), "unreadable", 0


# --- the landing sensor's tick, without Dagster -------------------------------------------------
