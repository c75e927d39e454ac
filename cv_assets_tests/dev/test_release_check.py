"""The demo's release step: its key, and an app fetching the beta channel over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cv_assets.dev.release_check import demo_key, fetch_beta
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile import releases
from cv_assets.read_side import open_store

pytestmark = pytest.mark.unit


def test_the_demo_makes_its_key_once_under_the_home_and_respects_the_users(cfg, tmp_path):
    env: dict[str, str] = {}
    key = demo_key(cfg, env)
    assert key is not None
    assert key == cfg.home / "keys" / "release.pem" and env["CV_ASSETS_RELEASE_KEY_FILE"] == str(
        key
    )
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    assert demo_key(cfg, {}) == key and key.read_bytes() == before  # made once, kept
    mine = {"CV_ASSETS_RELEASE_KEY_FILE": str(tmp_path / "mine.pem")}
    assert demo_key(cfg, mine) == tmp_path / "mine.pem"


def test_an_app_on_beta_gets_the_published_file_verified(cfg):
    key_path = demo_key(cfg, {})
    assert key_path is not None
    assert "nothing to fetch" in fetch_beta(cfg, key_path)
    store = open_store(cfg)
    onnx = store.put_bytes("mobile/k/model.int8.onnx", b"\x08\x01not really onnx")
    tflite = store.put_bytes("mobile/k/model.tflite", b"TFL3 not really a flatbuffer")
    src = releases.ReleaseSource(
        "4", 320, ["square", "circle"], {"onnx_int8": onnx.uri, "tflite": tflite.uri}
    )
    key = ch.load_private_key(key_path.read_bytes())
    releases.publish(store, key, "beta", src, now=datetime.now(UTC))
    lines = fetch_beta(cfg, key_path).splitlines()
    # One app per platform: each gets its own file, and iOS, with no file published, keeps none.
    assert lines[0].startswith("   beta onnx: installed v4 (v4-model_int8.onnx)")
    assert lines[1].startswith("   beta android: installed v4 (v4-model.tflite)")
    assert lines[2].startswith("   beta ios: refused") and "no_file_for_platform" in lines[2]
