"""``python -m cv_assets.dev.fleet``: a simulated day posted to a running telemetry service, as a
person tries the field loop with ``make ui``."""

import json

import pyarrow.parquet as pq
import pytest

from cv_assets.dev.fleet import MALFORMED, main
from cv_assets.lib.tracking.registry import CHAMPION_KEY
from cv_assets.read_side import open_store
from cv_assets_tests.support.models import constant_detector
from cv_assets_tests.telemetry.service import TOKEN, TelemetryServer, register_models

pytestmark = pytest.mark.integration


def test_a_day_reaches_the_running_service(cfg, tmp_path, monkeypatch, capsys):
    # The champion the fleet runs: a real ONNX file that always sees one circle.
    register_models(cfg, champion="2", earlier=("1",))
    store = open_store(cfg)
    onnx = constant_detector(tmp_path / "model.onnx")
    ref = store.put_bytes("mobile/const/model.onnx", onnx.read_bytes())
    pointer = json.loads(store.get_bytes(CHAMPION_KEY))
    store.put_bytes(CHAMPION_KEY, json.dumps(pointer | {"mobile": {"onnx_uri": ref.uri}}).encode())
    monkeypatch.setenv("CV_ASSETS_TELEMETRY_TOKEN", TOKEN)
    server = TelemetryServer(cfg, tmp_path / "telemetry.log").start()
    try:
        args = ["--url", server.url, "--day", "2026-11-30", "--installs", "4", "--seed", "1"]
        assert main(args) == 0
    finally:
        server.stop()  # flushes the spool
    said = capsys.readouterr().out
    assert f"{40 + MALFORMED} events of 2026-11-30 from 4 installs running v2" in said
    assert f"40 accepted, {MALFORMED} rejected" in said
    assert "unknown model version 'unregistered-0'" in said
    parts = sorted(store.list("telemetry/events/day=2026-11-30/"))
    rows = [r for k in parts for r in pq.read_table(store.local_path(k)).to_pylist()]
    assert len(rows) == 40 and {r["model_version"] for r in rows} == {"2"}
