"""The reference telemetry client: how an app sends its inference events and loses none.

An app developer ports these lines (to Kotlin, Swift or the app's own Python); they use the
standard library and ``requests``. ``TelemetryClient(url, token).send(events)`` posts the events
to ``<url>/v1/events`` in batches of at most ``batch_size`` (``lib/telemetry/contract.py`` says what
an event holds) and returns the service's answers summed::

    {"received": n, "accepted": a, "duplicates": d, "rejected": [{"index", "event_id", "reason"}]}

with each rejection's ``index`` counted in the caller's list. A batch the service did not answer
with 200 is resent as it was, same event ids, so a batch whose answer was lost is stored once
(the service deduplicates by id): after a 429, waiting what ``Retry-After`` says (at most
``max_backoff_s``); after a 5xx or a connection error, with exponential backoff. A refusal that
resending cannot fix (400, 401, 413) or a batch still failing after ``max_attempts`` raises
``TelemetryError``, carrying what was delivered before it; the app keeps the rest for later.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)


class TelemetryError(RuntimeError):
    """A batch the service refused or never answered; ``result`` holds what was delivered."""

    def __init__(self, message: str, result: dict[str, Any], undelivered: int) -> None:
        super().__init__(message)
        self.result = result
        self.undelivered = undelivered


class TelemetryClient:
    def __init__(
        self,
        url: str,
        token: str,
        batch_size: int = 500,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/v1/events"
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.retries = 0  # resends so far, for the app's own metrics
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff_s)
        # Full jitter: many apps that failed together do not come back together.
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))

    def _post(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The service's answer to one batch, resending it while that may help."""
        body = {"schema_version": 1, "events": list(batch)}
        last = ""
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                r = self._session.post(self.endpoint, json=body, timeout=self.timeout_s)
            except requests.exceptions.InvalidJSONError as e:  # NaN or inf: resending won't help
                raise _Refused(f"the batch is not valid JSON, nothing was sent: {e}") from None
            except requests.RequestException as e:  # refused, reset, timed out: resend
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    return r.json()
                reason = _reason(r)
                if r.status_code not in RETRY_STATUSES:
                    raise _Refused(f"{self.endpoint} answered {r.status_code}: {reason}")
                last, retry_after = f"{r.status_code}: {reason}", r.headers.get("Retry-After")
            if attempt + 1 < self.max_attempts:
                wait = self._wait(attempt, retry_after)
                log.info("telemetry: resending %d events in %.1fs (%s)", len(batch), wait, last)
                self.retries += 1
                self.sleep(wait)
        raise _Refused(f"{self.endpoint}: no answer after {self.max_attempts} attempts ({last})")

    def send(self, events: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Posts ``events`` in batches; the answers summed (see the module docstring)."""
        total: dict[str, Any] = {"received": 0, "accepted": 0, "duplicates": 0, "rejected": []}
        for start in range(0, len(events), self.batch_size):
            batch = events[start : start + self.batch_size]
            try:
                answer = self._post(batch)
            except _Refused as e:
                raise TelemetryError(str(e), total, len(events) - start) from None
            for k in ("received", "accepted", "duplicates"):
                total[k] += answer[k]
            total["rejected"] += [r | {"index": r["index"] + start} for r in answer["rejected"]]
        return total


class _Refused(Exception):
    pass


def _reason(r: requests.Response) -> str:
    try:
        return str(r.json().get("error", r.text[:200]))
    except ValueError:
        return r.text[:200]
