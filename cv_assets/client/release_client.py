"""The reference release-channel client: how an app fetches its detector and never runs a bad one.

An app developer ports these ~230 lines of code (to Kotlin, Swift or the app's own Python): they
use only the standard library's ``urllib`` and ``cryptography``, plus the pure rules of
``cv_assets.lib.mobile.channel`` (``verify``, ``in_rollout``, ``app_supported``), imported rather
than copied so that the client and the platform that publishes share one tested implementation.

``update()`` polls ``<base_url>/channels/<channel>/manifest.json``, checks it (signed by the pinned
key, not expired, not older than the last accepted, supported by this app version, this install in
the rollout), downloads the file for this platform to a temporary file while hashing it, and
installs it only when its size and sha256 match. ``model_path`` is always a verified file, or None
before the first install. Any failure leaves the installed file and ``state.json`` as they were and
removes the partial download. No secret is involved: the public key is pinned in the app.

Layout of ``state_dir``: ``state.json``, ``current/<file>``, ``previous/<file>`` (the model that was
current before, for ``rollback_local``), and ``.download-*.part`` only while downloading. Installed
names carry the model version (``v3-model.int8.onnx``), so a file never changes content under a
name that ``state.json`` points at, whatever moment the app is killed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cv_assets.lib.mobile.channel import (
    ManifestError,
    app_supported,
    app_version_tuple,
    in_rollout,
    load_public_key,
    manifest_key,
    parse_time,
    verify,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KiB; more is not a manifest


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UpdateResult:
    """What ``update()`` did: ``status`` for the app's logic, ``reason`` for its telemetry.

    ``status``: installed, up_to_date, not_in_rollout, refused, failed. ``reason``: a
    ``ManifestError`` code, or expired, downgrade, app_too_old, no_file_for_platform,
    hash_mismatch, size_mismatch, http_<status>, network, storage; empty when all went well.
    """

    status: str
    reason: str
    model_version: str | None
    model_path: Path | None
    message: str = ""


class _Stop(Exception):
    def __init__(self, status: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class ReleaseClient:
    def __init__(
        self,
        base_url: str,
        public_key_pem: bytes,
        platform: str,
        formats: Sequence[str],
        app_version: str,
        install_id: str,
        state_dir: Path,
        channel: str = "stable",
        timeout_s: float = 30,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        """A client for one channel.

        Args:
            public_key_pem: the release public key, pinned in the app (never fetched with it).
            platform: ``onnx``, ``android`` or ``ios``.
            formats: this platform's file formats in order of preference, e.g.
                ``("onnx_int8", "onnx_fp32")``: the first the manifest offers is taken.
            install_id: a random id made once per install; it places the install in rollouts.
            state_dir: the app's private directory for the model files and ``state.json``.
        """
        app_version_tuple(app_version)  # a malformed version fails here, not at every update
        self.base_url = base_url.rstrip("/")
        self.key = load_public_key(public_key_pem)
        self.platform, self.formats = platform, tuple(formats)
        self.app_version, self.install_id = app_version, install_id
        self.state_dir, self.channel = Path(state_dir), channel
        self.timeout_s, self.now = timeout_s, now

    # --- what the app reads

    def state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.state_dir / "state.json").read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def model_path(self) -> Path | None:
        """The verified file the app should load now, or None if none was ever installed."""
        name = self.state().get("file")
        path = self.state_dir / "current" / name if name else None
        return path if path is not None and path.is_file() else None

    def _result(self, status: str, reason: str = "", message: str = "") -> UpdateResult:
        return UpdateResult(status, reason, self.state().get("model_version"), self.model_path,
                            message)  # fmt: skip

    # --- the update

    def update(self) -> UpdateResult:
        """Check the channel once and install its model when it is newer, valid and meant for us."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._tidy()
            return self._update()
        except _Stop as e:
            log.warning("model update %s (%s): %s", e.status, e.reason, e.message)
            return self._result(e.status, e.reason, e.message)
        except OSError as e:  # the app's own disk (full, read-only): the network is wrapped below
            log.warning("model update failed on local storage: %s", e)
            return self._result("failed", "storage", f"{type(e).__name__}: {e}")

    def _update(self) -> UpdateResult:
        state = self.state()
        raw = bytearray()
        self._fetch(manifest_key(self.channel), MAX_MANIFEST_BYTES, raw.extend, "bad_manifest")
        try:
            m = verify(bytes(raw), self.key)
        except ManifestError as e:
            raise _Stop("refused", e.reason, e.message) from None
        if m["channel"] != self.channel:  # sequences are per channel: no cross-channel replays
            raise _Stop("refused", "bad_manifest", f"a {m['channel']} manifest on {self.channel}")
        if parse_time(m["expires_at"]) <= self.now():
            raise _Stop("refused", "expired", f"the manifest expired at {m['expires_at']}")
        # Sequences count per channel: an app moved to another channel starts that one afresh.
        last = state.get("sequence", 0) if state.get("channel") == self.channel else 0
        if m["sequence"] < last:
            raise _Stop("refused", "downgrade", f"sequence {m['sequence']} < accepted {last}")
        if m["sequence"] == last:
            # Same manifest as last time; a different version here means the app rolled back
            # locally, which holds until the channel publishes something newer.
            same = m["model_version"] == state.get("model_version")
            return self._result("up_to_date", "" if same else "local_rollback")
        if not app_supported(m, self.app_version):
            need = m["min_app_version"]
            raise _Stop("refused", "app_too_old", f"needs app {need}, this is {self.app_version}")
        if m["model_version"] == state.get("model_version"):  # a rollout change: nothing to fetch
            self._save(state | {"sequence": m["sequence"]})
            return self._result("up_to_date")
        if not in_rollout(self.install_id, m):
            share = f"{m['rollout_percent']}% rollout of {m['model_version']}"
            return self._result("not_in_rollout", "", share)
        f = next((f for fmt in self.formats for f in m["files"]
                  if f["platform"] == self.platform and f["format"] == fmt), None)  # fmt: skip
        if f is None:
            raise _Stop("refused", "no_file_for_platform",
                        f"no {'/'.join(self.formats)} file for {self.platform}")  # fmt: skip
        tmp = self._download(f)
        try:
            self._install(m, f, tmp, state)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("model %s installed (sequence %d)", m["model_version"], m["sequence"])
        return self._result("installed")

    def _fetch(self, key: str, limit: int, sink: Callable[[bytes], None], too_big: str) -> int:
        """Stream ``<base_url>/<key>`` into ``sink``: the byte count, or ``_Stop``."""
        url = f"{self.base_url}/{urllib.parse.quote(key)}"
        req = urllib.request.Request(url, headers={"Cache-Control": "no-cache"})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            raise _Stop("failed", f"http_{e.code}", f"{key}: HTTP {e.code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise _Stop("failed", "network", f"{key}: {type(e).__name__}: {e}") from None
        n = 0
        with resp:
            expected = resp.headers.get("Content-Length", "")
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:  # reset, timeout, cut chunks
                    raise _Stop(
                        "failed", "network", f"{key}: {type(e).__name__} after {n} B"
                    ) from None
                if not chunk:
                    break
                n += len(chunk)
                if n > limit:
                    raise _Stop("refused", too_big, f"{key}: more than {limit} B")
                sink(chunk)  # its OSError is the app's disk, not the network: not caught here
        # A body cut short under a Content-Length reads as a clean end of stream.
        if expected.isdigit() and n != int(expected):
            raise _Stop("failed", "network", f"{key}: connection closed after {n} of {expected} B")
        return n

    def _download(self, f: dict) -> Path:
        """The verified file in a temporary file of ``state_dir``, or ``_Stop`` and no file."""
        fd, name = tempfile.mkstemp(dir=self.state_dir, prefix=".download-", suffix=".part")
        tmp, digest = Path(name), hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:

                def sink(chunk: bytes) -> None:
                    digest.update(chunk)
                    out.write(chunk)

                n = self._fetch(f["url"], f["size"], sink, "size_mismatch")
                out.flush()
                os.fsync(out.fileno())
            if n != f["size"]:
                raise _Stop("refused", "size_mismatch", f"{f['url']}: {n} B, manifest {f['size']}")
            if digest.hexdigest() != f["sha256"]:
                raise _Stop("refused", "hash_mismatch", f"{f['url']}: sha256 differs")
            return tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _install(self, m: dict, f: dict, tmp: Path, state: dict[str, Any]) -> None:
        cur = self.state_dir / "current"
        cur.mkdir(exist_ok=True)
        previous = None
        if (old := self.model_path) is not None:
            # Linked, not moved: current/ never lacks the file state.json names.
            _keep(old, self._fresh_dir("previous") / old.name)
            previous = {k: state.get(k) for k in ("model_version", "sha256", "file")}
        name = f"v{m['model_version']}-{PurePosixPath(f['url']).name}"
        os.replace(tmp, cur / name)
        self._save({
            "channel": self.channel, "sequence": m["sequence"],
            "model_version": m["model_version"], "sha256": f["sha256"], "file": name,
            "format": f["format"], "previous": previous,
        })  # fmt: skip
        self._tidy()

    def rollback_local(self) -> UpdateResult:
        """Switch back to the kept previous model (the current one becomes previous in turn).

        For an app that finds the new model failing on the device before the channel rolls back;
        the accepted sequence stays, so the same manifest is not installed again.
        """
        state, cur = self.state(), self.model_path
        prev = state.get("previous") or {}
        path = self.state_dir / "previous" / str(prev.get("file"))
        if not prev.get("file") or not path.is_file() or cur is None:
            return self._result("failed", "no_previous", "no previous model is kept")
        _keep(path, self.state_dir / "current" / path.name)
        _keep(cur, self.state_dir / "previous" / cur.name)
        swapped = {k: state.get(k) for k in ("model_version", "sha256", "file")}
        self._save(state | prev | {"previous": swapped})
        self._tidy()
        return self._result("installed", "local_rollback")

    # --- files

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_dir / "state.json")

    def _fresh_dir(self, name: str) -> Path:
        path = self.state_dir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def _tidy(self) -> None:
        """Remove what an interrupted update or install left: partial downloads, unnamed files."""
        state = self.state()
        keep = {"current": state.get("file"), "previous": (state.get("previous") or {}).get("file")}
        for p in self.state_dir.glob(".download-*.part"):
            p.unlink(missing_ok=True)
        for sub, name in keep.items():
            for p in (self.state_dir / sub).glob("*") if (self.state_dir / sub).is_dir() else []:
                if p.name != name:
                    p.unlink(missing_ok=True)


def _keep(src: Path, dst: Path) -> None:
    """``dst`` with ``src``'s bytes, replaced atomically: a hard link, a copy where links fail."""
    if src == dst:
        return
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
