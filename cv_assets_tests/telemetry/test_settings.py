"""The service's settings and its pure parts: read once from the environment, refused clearly."""

import subprocess
import sys

import pytest

from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.telemetry.app import RateLimiter, TelemetrySettings

pytestmark = pytest.mark.unit


def test_defaults_and_rate_with_burst(tmp_path):
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path)})
    s = TelemetrySettings.from_env(cfg, {"CV_ASSETS_TELEMETRY_TOKEN": "t0ken"})
    assert (s.max_bytes, s.rate, s.burst, s.flush_interval_s) == (5 * 2**20, 5000, 10000, 10)
    assert s.dedup_window_s == 604800  # 7 days
    assert s.spool_dir == tmp_path / "telemetry" / "spool"
    assert "t0ken" not in repr(s)
    env = {"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_RATE": "50/75"}
    assert (
        TelemetrySettings.from_env(cfg, env).rate,
        TelemetrySettings.from_env(cfg, env).burst,
    ) == (50, 75)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CV_ASSETS_TELEMETRY_TOKEN is not set"),
        ({"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_RATE": "fast"}, "RATE='fast'"),
        (
            {"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_MAX_BYTES": "-1"},
            "MAX_BYTES='-1'",
        ),
        (
            {"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S": "0"},
            "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S='0': expected a number of seconds > 0",
        ),
        (
            {"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S": "-60"},
            "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S='-60'",
        ),
    ],
)
def test_incomplete_settings_are_refused_naming_the_variable(tmp_path, env, message):
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path)})
    with pytest.raises(ValueError, match=message):
        TelemetrySettings.from_env(cfg, env)


def test_dedup_window_is_read_in_seconds(tmp_path):
    cfg = PlatformConfig.from_env({"CV_ASSETS_HOME": str(tmp_path)})
    env = {"CV_ASSETS_TELEMETRY_TOKEN": "t", "CV_ASSETS_TELEMETRY_DEDUP_WINDOW_S": "86400"}
    assert TelemetrySettings.from_env(cfg, env).dedup_window_s == 86400


def test_rate_limiter_says_how_long_to_wait():
    limiter = RateLimiter(rate=100, burst=200)
    assert limiter.take("a", 200) == 0
    assert limiter.take("a", 100) == pytest.approx(1.0, abs=0.05)
    assert limiter.take("b", 150) == 0  # another client has its own bucket


def test_the_telemetry_lib_does_not_import_dagster():
    code = (
        "import sys, cv_assets.lib.telemetry.contract, cv_assets.lib.telemetry.spool; "
        "print('dagster' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
