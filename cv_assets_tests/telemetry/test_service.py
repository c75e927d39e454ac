"""The real telemetry service under uvicorn in a child process, spoken to over real HTTP."""

import contextlib
import json
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cv_assets.client.telemetry_client import TelemetryClient, TelemetryError
from cv_assets.dev.home import prepare_home
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.read_side import open_store
from cv_assets_tests.telemetry.service import (
    TOKEN,
    TelemetryServer,
    jpeg_b64,
    make_event,
    parquet_rows,
    register_models,
)

pytestmark = pytest.mark.integration

LIMIT = 256 * 1024  # the shared server's body limit: small, so a test need not send megabytes


def batch(*events) -> dict:
    return {"schema_version": 1, "events": list(events)}


def answer(r: requests.Response) -> dict:
    """A 200's body, after checking that every received event is accepted or rejected."""
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] + len(body["rejected"]) == body["received"], body
    return body


def flushed(cfg: PlatformConfig, ids: set[str], timeout: float = 20) -> list[str]:
    """The Parquet rows' ids among ``ids`` once all are there (the flush runs every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r["event_id"] for r in parquet_rows(open_store(cfg)) if r["event_id"] in ids]
        if set(found) == ids or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> PlatformConfig:
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path_factory.mktemp("telemetry"))})
    prepare_home(cfg)
    register_models(cfg, champion="2", earlier=("1",))
    return cfg


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "telemetry.log"
    s = TelemetryServer(home, log, CV_ASSETS_TELEMETRY_MAX_BYTES=str(LIMIT)).start()
    yield s
    s.stop()
    assert TOKEN not in s.tail()  # the token is never logged


def test_healthz_lists_every_registered_version(server):
    body = requests.get(f"{server.url}/healthz", timeout=5).json()
    assert body == {"status": "ok", "known_models": ["1", "2"]}


def test_good_batch_is_accepted_and_reaches_parquet(server, home):
    rng = random.Random(11)
    events = [make_event(rng) for _ in range(100)]
    body = answer(server.post(batch(*events)))
    assert body == {"received": 100, "accepted": 100, "duplicates": 0, "rejected": []}
    ids = {e["event_id"] for e in events}
    found = flushed(home, ids)
    assert sorted(found) == sorted(ids)


def test_malformed_json_is_400_with_the_parser_reason(server):
    r = server.post(b'{"schema_version": 1, "events": [')
    assert r.status_code == 400
    assert r.json()["error"].startswith("body: not valid JSON (Expecting value: line 1")


def test_wrong_schema_version_is_400(server):
    r = server.post({"schema_version": 2, "events": [make_event()]})
    assert r.status_code == 400
    assert r.json() == {"error": "schema_version: 2 is not supported (this service speaks 1)"}


def test_missing_fields_nan_and_bad_boxes_are_rejected_one_by_one(server):
    missing = make_event()
    del missing["model_sha256"], missing["input"]["height"]
    nan = make_event(latency_ms=float("nan"))
    boxed = make_event(detections=[{"class_id": 0, "confidence": 0.4, "box": [0.8, 0.2, 0.2, 0.4]}])
    outside = make_event(detections=[{"class_id": 0, "confidence": 0.4, "box": [0, 0, 1.5, 1]}])
    good = make_event()
    # json.dumps writes NaN as the bare token NaN, as a careless app's encoder might.
    body = answer(server.post(json.dumps(batch(missing, nan, good, boxed, outside))))
    assert body["received"] == 5 and body["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert "events[0].model_sha256: missing (required, string)" in reasons[0]
    assert "events[0].input.height: missing (required, integer)" in reasons[0]
    assert reasons[1] == "events[1].latency_ms: nan is not a finite number >= 0"
    assert reasons[3] == "events[3].detections[0].box: x1 0.8 is not < x2 0.2"
    assert reasons[4].startswith("events[4].detections[0].box: [0, 0, 1.5, 1] has a value outside")
    assert body["rejected"][0]["event_id"] == missing["event_id"]


def test_image_without_consent_is_rejected_and_with_consent_stored(server, home):
    image = jpeg_b64()
    refused = make_event(consent_image=False, image=image)
    kept = make_event(consent_image=True, sampling="low_confidence", image=image)
    body = answer(server.post(batch(refused, kept)))
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {
            "index": 0,
            "event_id": refused["event_id"],
            "reason": "events[0].image: an image is only allowed when consent_image is true",
        }
    ]
    store = open_store(home)
    day = kept["time"][:10]
    assert store.exists(f"telemetry/frames/{day}/{kept['event_id']}.jpg")
    assert not store.exists(f"telemetry/frames/{day}/{refused['event_id']}.jpg")


def test_unknown_model_version_is_rejected_naming_the_known(server):
    body = answer(server.post(batch(make_event(model_version="v9"))))
    assert body["rejected"][0]["reason"] == (
        "events[0].model_version: unknown model version 'v9' (known: 1, 2)"
    )


def test_duplicate_event_ids_are_stored_once(server, home):
    rng = random.Random(12)
    events = [make_event(rng) for _ in range(20)]
    first = answer(server.post(batch(*events, events[0])))
    assert first["received"] == 21 and first["accepted"] == 21 and first["duplicates"] == 1
    again = answer(server.post(batch(*events)))
    assert again["accepted"] == 20 and again["duplicates"] == 20
    ids = {e["event_id"] for e in events}
    flushed(home, ids)
    time.sleep(1.2)  # two more flush periods: nothing may be written twice
    found = [r["event_id"] for r in parquet_rows(open_store(home)) if r["event_id"] in ids]
    assert sorted(found) == sorted(ids)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "authorization: expected 'Bearer <token>'"),
        ("wrong-token", "authorization: the token is not valid"),
        (TOKEN + "x", "authorization: the token is not valid"),
    ],
)
def test_missing_or_wrong_token_is_401(server, token, reason):
    r = server.post(batch(make_event()), token=token)
    assert r.status_code == 401 and r.json() == {"error": reason}


def test_body_over_the_limit_is_413(server):
    rng = random.Random(13)
    big = batch(*[make_event(rng) for _ in range(600)])  # ~400 KiB over a 256 KiB limit
    r = server.post(big)
    assert r.status_code == 413
    assert r.json() == {"error": "body: over the limit of 262,144 bytes; send smaller batches"}


def _send_until_answered(port: int, head: bytes, chunks, limit: int) -> tuple[bytes, int]:
    """Sends ``head`` then ``chunks`` until the server answers; the answer and bytes sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0] or sent >= limit:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        sock.settimeout(10)
        # The head and the body may arrive in separate packets: read until the server closes
        # (it answers 413 with Connection: close) or the body its Content-Length names is in.
        reply = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            reply += data
            head_end = reply.find(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", reply[:head_end])
            if head_end >= 0 and length and len(reply) >= head_end + 4 + int(length[1]):
                break
        return reply, sent


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_real_50_mb_body_is_refused_without_reading_it_all(server, framing):
    size, piece = 50 * 2**20, b"x" * 2**16
    before = server.rss_peak_kib()
    head = f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
    if framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(size // len(piece)))
    else:  # an honest Content-Length is refused before one byte of the body is read
        head += f"Content-Length: {size}\r\n\r\n"
        chunks = (piece for _ in range(size // len(piece)))
    reply, sent = _send_until_answered(server.port, head.encode(), chunks, size)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b'{"error":"body: over the limit of 262,144 bytes' in reply
    assert sent < size  # the server answered before the client could send it all
    grown_mib = (server.rss_peak_kib() - before) / 1024
    assert grown_mib < 20, f"the server's peak memory grew {grown_mib:.0f} MiB"


def test_burst_beyond_the_rate_is_429_and_the_client_retry_succeeds(home, tmp_path):
    s = TelemetryServer(home, tmp_path / "rate.log", CV_ASSETS_TELEMETRY_RATE="100/200").start()
    try:
        rng = random.Random(14)
        assert answer(s.post(batch(*[make_event(rng) for _ in range(200)])))["accepted"] == 200
        r = s.post(batch(*[make_event(rng) for _ in range(150)]))
        assert r.status_code == 429
        # 200 taken, about 0 left: 150 more need about 1.5 s at 100/s.
        assert re.fullmatch(
            r"rate limit: 100 events/s per client; retry in 1\.\d\ds", r.json()["error"]
        ), r.json()
        assert r.headers["Retry-After"] == "2"
        too_big = s.post(batch(*[make_event(rng) for _ in range(201)]))
        assert too_big.status_code == 413
        assert "201 in one batch, more than the rate limit's burst of 200" in too_big.text
        client = TelemetryClient(s.url, TOKEN, batch_size=150)
        events = [make_event(rng) for _ in range(300)]
        result = client.send(events)
        assert client.retries >= 1
        assert result["received"] == 300 and result["accepted"] == 300
        assert result["duplicates"] == 0 and result["rejected"] == []
    finally:
        s.stop()


def test_client_gives_up_on_a_refusal_that_resending_cannot_fix(server):
    client = TelemetryClient(server.url, "not-the-token")
    with pytest.raises(TelemetryError, match="answered 401: authorization: the token is not valid"):
        client.send([make_event()])


def test_client_refuses_a_batch_it_cannot_encode_without_resending(server):
    slept: list[float] = []
    client = TelemetryClient(server.url, TOKEN, batch_size=1, sleep=slept.append)
    good, bad = make_event(), make_event(latency_ms=float("nan"))
    with pytest.raises(TelemetryError, match="not valid JSON, nothing was sent") as err:
        client.send([good, bad])
    assert err.value.result["accepted"] == 1 and err.value.undelivered == 1
    assert slept == [] and client.retries == 0


def test_client_reports_rejections_at_the_callers_index(server):
    events = [make_event() for _ in range(5)]
    events[3]["os"] = "beos"
    result = TelemetryClient(server.url, TOKEN, batch_size=2).send(events)
    assert result["received"] == 5 and result["accepted"] == 4
    assert [r["index"] for r in result["rejected"]] == [3]
    assert result["rejected"][0]["event_id"] == events[3]["event_id"]


def test_sigkill_mid_stream_loses_no_acknowledged_event_and_duplicates_none(tmp_path):
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path / "home")})
    prepare_home(cfg)
    register_models(cfg)
    log = tmp_path / "kill.log"
    s = TelemetryServer(cfg, log, CV_ASSETS_TELEMETRY_FLUSH_S="0.3").start()
    rng = random.Random(15)
    batches = [[make_event(rng) for _ in range(100)] for _ in range(400)]
    acked: set[str] = set()
    failures: list[str] = []
    attempted = 0

    def stream() -> None:
        nonlocal attempted
        for b in batches:
            attempted += 1
            try:
                r = requests.post(
                    f"{s.url}/v1/events",
                    json=batch(*b),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=10,
                )
            except requests.RequestException:
                return  # the server died under this request: its answer never came
            if r.status_code != 200 or r.json()["accepted"] != len(b):
                failures.append(r.text[:300])
                return
            acked.update(e["event_id"] for e in b)

    sender = threading.Thread(target=stream)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acked) < 3000 and time.monotonic() < deadline and sender.is_alive():
        time.sleep(0.05)
    s.stop(signal.SIGKILL)
    sender.join(timeout=30)
    assert failures == []
    assert 3000 <= len(acked) < 40000, f"{len(acked)} acknowledged before the kill"

    s2 = TelemetryServer(cfg, log).start()
    # As the reference client does: the batch in flight at the kill is resent, same ids.
    resent = answer(s2.post(batch(*batches[attempted - 1])))
    assert resent["accepted"] == 100
    s2.stop()  # SIGTERM: the shutdown flush
    rows = parquet_rows(open_store(cfg))
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an event is in the Parquet output twice"
    assert acked <= set(ids), f"{len(acked - set(ids))} acknowledged events were lost"
    sent = {e["event_id"] for b in batches[:attempted] for e in b}
    assert set(ids) == sent  # and nothing that was never sent


def test_flushed_events_leave_the_spool_after_the_dedup_window(tmp_path):
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path / "home")})
    prepare_home(cfg)
    register_models(cfg)
    window = {"CV_ASSETS_TELEMETRY_FLUSH_S": "0.2", "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S": "1"}
    s = TelemetryServer(cfg, tmp_path / "prune.log", **window).start()
    try:
        rng = random.Random(16)
        events = [make_event(rng) for _ in range(20)]
        assert answer(s.post(batch(*events)))["duplicates"] == 0
        spool_db = cfg.home / "telemetry" / "spool" / "spool.db"
        deadline, left = time.monotonic() + 20, -1
        while left != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.closing(sqlite3.connect(spool_db)) as db:
                left = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert left == 0, f"{left} rows still spooled\n{s.tail()}"
        ids = [r["event_id"] for r in parquet_rows(open_store(cfg))]
        assert sorted(ids) == sorted(e["event_id"] for e in events)
        assert "20 flushed events older than 1s pruned" in s.tail()
        # Past the window the ids are forgotten: the same batch is stored again, as documented.
        assert answer(s.post(batch(*events)))["duplicates"] == 0
    finally:
        s.stop()


def test_service_refuses_to_start_without_a_token(home, tmp_path: Path):
    s = TelemetryServer(home, tmp_path / "notoken.log", CV_ASSETS_TELEMETRY_TOKEN="")
    proc = subprocess.run(
        [sys.executable, "-m", "cv_assets.telemetry"],
        env=s.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("cv_assets.telemetry: CV_ASSETS_TELEMETRY_TOKEN is not set")
