"""The telemetry service's local token: the environment's, else one generated once and kept."""

import os
import stat
import subprocess
import sys

import pytest

from cv_assets.dev.telemetry import TOKEN_VAR, service_env, service_token, token_file

pytestmark = pytest.mark.unit


def test_a_token_is_generated_once_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "telemetry" / "token"
    token, kept_in = service_token(tmp_path, {})
    assert kept_in == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40  # token_urlsafe(32): 43 characters
    again, same = service_token(tmp_path, {TOKEN_VAR: "  "})  # blank counts as unset
    assert (again, same) == (token, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["token"]  # no temporary left


def test_the_environments_token_wins_and_nothing_is_written(tmp_path):
    assert service_token(tmp_path, {TOKEN_VAR: " from-env "}) == ("from-env", None)
    assert not token_file(tmp_path).exists()
    kept, _ = service_token(tmp_path, {})
    assert service_token(tmp_path, {TOKEN_VAR: "from-env"}) == ("from-env", None)
    assert token_file(tmp_path).read_text().strip() == kept  # the kept one stays for later


def test_an_empty_token_file_is_refused_naming_it(tmp_path):
    token_file(tmp_path).parent.mkdir(parents=True)
    token_file(tmp_path).write_text("\n")
    with pytest.raises(ValueError, match=r"telemetry/token is empty: delete it .* or set"):
        service_token(tmp_path, {})


def test_the_service_env_says_where_the_token_is_but_never_prints_it(tmp_path, capsys):
    env = service_env(tmp_path, {"OTHER": "kept"})
    token = token_file(tmp_path).read_text().strip()
    assert env == {"OTHER": "kept", TOKEN_VAR: token}
    out = capsys.readouterr().out
    assert str(token_file(tmp_path)) in out and token not in out


def test_make_telemetry_starts_the_service_with_the_kept_token(tmp_path):
    """Through ``python -m cv_assets.dev.telemetry``: the service starts far enough to refuse
    a bad setting, so the token was handed over (without one it would refuse that first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CV_ASSETS_")}
    env |= {"CV_ASSETS_HOME": str(tmp_path), "CV_ASSETS_TELEMETRY_FLUSH_S": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "cv_assets.dev.telemetry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    token = token_file(tmp_path).read_text().strip()
    assert proc.returncode == 2, proc.stderr
    assert "CV_ASSETS_TELEMETRY_FLUSH_S='0': expected a number of seconds > 0" in proc.stderr
    assert f"the token is in {token_file(tmp_path)}" in proc.stdout
    assert token not in proc.stdout + proc.stderr
