"""The telemetry ingest service: apps post inference events, the spool keeps them, Parquet leaves.

``POST /v1/events`` takes a batch (``lib/telemetry/contract.py`` documents every field) with
``Authorization: Bearer <token>`` and answers, always in JSON with a reason:

- 200 ``{"received", "accepted", "duplicates", "rejected": [{"index", "event_id", "reason"}]}``:
  ``accepted`` counts the events stored, duplicates (ids already stored) included, so
  ``accepted + len(rejected) == received``. An accepted event is committed to the spool before
  the answer leaves, so the app may forget it.
- 400 ``{"error"}``: the body is not JSON, or the envelope is wrong (schema version, ``events``).
- 401: no token or a wrong one. 413: the body is over the limit (it is read with a cap, whatever
  ``Content-Length`` says), or a batch holds more events than the rate limit's burst.
- 429 with ``Retry-After``: over the rate limit of this token and client address.
- 503 with ``Retry-After``: the spool or the artifact store failed; nothing of the batch may be
  assumed stored, so the app resends it (event ids make that safe).

``GET /healthz`` says whether the service runs and which model versions it knows. The known
versions are every version in the registry's history and the champion pointer
(``registry/history.json``, ``registry/champion.json``: read without MLflow, as ``predict`` does),
re-read every 30 s. A version's class count is its ``class_names`` when it was champion while the
service ran (the pointer names them), else the platform's configured classes.

A background task flushes the spool to the artifact store every ``flush_interval_s`` and once more
at shutdown; after each flush it prunes the rows flushed and received more than
``dedup_window_s`` ago (7 days): an event id resent within the window is a duplicate, one resent
later is stored again. Each batch is logged in one line of counts; payloads and the token never
are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.telemetry.contract import (
    MAX_IMAGE_BYTES,
    BatchError,
    check_envelope,
    validate_batch,
)
from cv_assets.lib.telemetry.spool import Spool
from cv_assets.lib.tracking.registry import HISTORY_KEY, read_champion
from cv_assets.read_side import open_store

log = logging.getLogger("cv_assets.telemetry")

MIB = 1 << 20


@dataclass(frozen=True)
class TelemetrySettings:
    """What the service needs, read once at its entry point (``from_env``)."""

    cfg: PlatformConfig
    token: str = field(repr=False)
    spool_dir: Path
    max_bytes: int = 5 * MIB
    rate: float = 5000.0  # events per second, per token and client address
    burst: float = 10000.0
    flush_interval_s: float = 10.0
    dedup_window_s: float = 7 * 86400.0  # flushed ids kept this long to catch resent events
    models_refresh_s: float = 30.0
    max_image_bytes: int = MAX_IMAGE_BYTES

    @classmethod
    def from_env(
        cls, cfg: PlatformConfig, env: Mapping[str, str] | None = None
    ) -> TelemetrySettings:
        """``CV_ASSETS_TELEMETRY_TOKEN`` (required), ``_MAX_BYTES``, ``_RATE`` (``5000`` or
        ``5000/10000``: events per second / burst), ``_FLUSH_S``, ``_DEDUP_WINDOW_S``,
        ``_MAX_IMAGE_BYTES``."""
        e = os.environ if env is None else env
        token = e.get("CV_ASSETS_TELEMETRY_TOKEN", "")
        if not token.strip():
            raise ValueError(
                "CV_ASSETS_TELEMETRY_TOKEN is not set: the telemetry service refuses to start "
                "without a token (apps send it as 'Authorization: Bearer <token>'); generate one, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        rate_text = e.get("CV_ASSETS_TELEMETRY_RATE", "5000")
        rate_s, _, burst_s = rate_text.partition("/")
        try:
            rate = float(rate_s)
            burst = float(burst_s) if burst_s else 2 * rate
        except ValueError:
            raise ValueError(
                f"CV_ASSETS_TELEMETRY_RATE={rate_text!r}: expected events per second, "
                "optionally /burst (5000 or 5000/10000)"
            ) from None
        if not (rate > 0 and burst >= 1):
            raise ValueError(f"CV_ASSETS_TELEMETRY_RATE={rate_text!r}: rate and burst must be > 0")
        return cls(
            cfg=cfg,
            token=token.strip(),
            spool_dir=cfg.home / "telemetry" / "spool",
            max_bytes=_positive_int(e, "CV_ASSETS_TELEMETRY_MAX_BYTES", 5 * MIB),
            rate=rate,
            burst=burst,
            flush_interval_s=_seconds(e, "CV_ASSETS_TELEMETRY_FLUSH_S", 10.0),
            dedup_window_s=_seconds(e, "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S", 7 * 86400.0),
            max_image_bytes=_positive_int(
                e, "CV_ASSETS_TELEMETRY_MAX_IMAGE_BYTES", MAX_IMAGE_BYTES
            ),
        )


def _seconds(env: Mapping[str, str], var: str, default: float) -> float:
    text = env.get(var, str(default))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{var}={text!r}: expected a number of seconds > 0")
    return value


def _positive_int(env: Mapping[str, str], var: str, default: int) -> int:
    text = env.get(var, str(default))
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{var}={text!r}: expected a positive whole number of bytes")
    return int(text)


class RateLimiter:
    """A token bucket per key: ``rate`` events per second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, n: int) -> float:
        """Takes ``n`` events' worth; 0 when allowed, else the seconds until it would be."""
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - at) * self.rate)
            if n > level:
                self._buckets[key] = (level, now)
                return (n - level) / self.rate
            self._buckets[key] = (level - n, now)
            if len(self._buckets) > 100_000:  # forget clients whose bucket has refilled
                full = now - self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] > full}
            return 0.0


def read_known_models(
    store: ArtifactStore, classes: int, seen: Mapping[str, int]
) -> dict[str, int]:
    """Every model version the registry ever recorded, with its number of classes.

    Args:
        classes: the platform's class count, for a version whose own count is not known.
        seen: counts learnt earlier (from the champion pointer) and kept.
    """
    known = dict(seen)
    if store.exists(HISTORY_KEY):
        for entry in json.loads(store.get_bytes(HISTORY_KEY)):
            for v in (entry.get("version"), entry.get("previous")):
                if v is not None:
                    known.setdefault(str(v), classes)
    champ = read_champion(store)
    if champ is not None:
        names = champ.get("class_names") or []
        known[str(champ["version"])] = len(names) or known.get(str(champ["version"]), classes)
    return known


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=dict(headers or {}))


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def create_app(settings: TelemetrySettings) -> FastAPI:
    """The service over ``settings``: the spool opens and the timers start with the app."""
    store = open_store(settings.cfg)
    limiter = RateLimiter(settings.rate, settings.burst)
    expected = settings.token.encode()
    state: dict[str, Any] = {"models": {}}

    def refresh_models() -> None:
        try:
            state["models"] = read_known_models(store, len(settings.cfg.classes), state["models"])
        except Exception as e:  # keep the last known versions while the store is unreachable
            log.warning("telemetry: could not read the registry in %s: %s", store.root, e)

    def flush() -> None:
        try:
            state["spool"].flush()
        except Exception as e:  # the events stay spooled; the next flush tries again
            log.warning("telemetry: flush to %s failed, events stay spooled: %s", store.root, e)
        # Apart from the flush: rows flushed earlier may go even while the store is unreachable.
        try:
            state["spool"].prune(settings.dedup_window_s)
        except Exception as e:  # sqlite (locked, disk full): the rows stay, the next flush prunes
            log.warning("telemetry: pruning the spool %s failed: %s", settings.spool_dir, e)

    async def every(seconds: float, fn: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            await run_in_threadpool(fn)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["spool"] = Spool(settings.spool_dir, store)
        await run_in_threadpool(refresh_models)
        await run_in_threadpool(flush)  # what a killed process left planned or unflushed
        tasks = [
            asyncio.create_task(every(settings.flush_interval_s, flush)),
            asyncio.create_task(every(settings.models_refresh_s, refresh_models)),
        ]
        log.info(
            "telemetry: spool %s, known models %s, flush every %gs, dedup window %gs",
            settings.spool_dir,
            ", ".join(sorted(state["models"])) or "none",
            settings.flush_interval_s,
            settings.dedup_window_s,
        )
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await run_in_threadpool(flush)
            state["spool"].close()

    app = FastAPI(title="cv_assets telemetry", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("telemetry: %s %s failed", request.method, request.url.path)
        return _error(500, "internal error; nothing of the batch may be assumed stored")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "known_models": sorted(state["models"])}

    def ingest(body: bytes, client: str) -> JSONResponse:
        t0 = time.perf_counter()
        try:
            doc = json.loads(body)
            events = check_envelope(doc)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            return _reply(client, 400, f"body: not valid JSON ({e})")
        except BatchError as e:
            return _reply(client, 400, str(e))
        if len(events) > settings.burst:
            why = (
                f"events: {len(events)} in one batch, more than the rate limit's burst of "
                f"{settings.burst:g}; send smaller batches"
            )
            return _reply(client, 413, why)
        wait = limiter.take(f"{hashlib.sha256(expected).hexdigest()[:16]}|{client}", len(events))
        if wait > 0:
            why = f"rate limit: {settings.rate:g} events/s per client; retry in {wait:.2f}s"
            return _reply(client, 429, why, {"Retry-After": str(max(1, math.ceil(wait)))})
        accepted, rejected = validate_batch(doc, state["models"], settings.max_image_bytes)
        try:
            stored, duplicates = state["spool"].add(accepted)
        except Exception as e:  # sqlite (disk full, locked) or the store (a frame): retryable
            log.error("telemetry: batch from %s not stored: %s", client, e)
            why = f"spool: the batch could not be stored ({type(e).__name__}); resend it"
            return _reply(client, 503, why, {"Retry-After": "5"})
        log.info(
            "telemetry: batch from %s: received %d, accepted %d (new %d, duplicates %d), "
            "rejected %d, %.0f ms",
            client,
            len(events),
            len(accepted),
            stored,
            duplicates,
            len(rejected),
            (time.perf_counter() - t0) * 1000,
        )
        result = {
            "received": len(events),
            "accepted": len(accepted),
            "duplicates": duplicates,
            "rejected": rejected,
        }
        return JSONResponse(result)

    @app.post("/v1/events")
    async def post_events(request: Request) -> JSONResponse:
        client = request.client.host if request.client else "unknown"
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _reply(client, 401, "authorization: expected 'Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), expected):
            return _reply(client, 401, "authorization: the token is not valid")
        body = await _read_capped(request, settings.max_bytes)
        if body is None:
            why = f"body: over the limit of {settings.max_bytes:,} bytes; send smaller batches"
            # Closing the connection: the unread rest of the body must not be parsed as a request.
            return _reply(client, 413, why, {"Connection": "close"})
        return await run_in_threadpool(ingest, body, client)

    return app


def _reply(
    client: str, status: int, reason: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A refusal, logged in one line without the body."""
    log.info("telemetry: batch from %s refused (%d): %s", client, status, reason[:200])
    return _error(status, reason, headers)
