import json
import os
import subprocess
import sys

import pytest

from cv_assets_tests.conftest import land


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cv_assets.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=120,
    )


@pytest.mark.unit
def test_synth_writes_batches_in_the_landing_contract(cfg, tmp_path):
    out = cli(
        "synth",
        "--landing",
        str(tmp_path / "land"),
        "--batches",
        "2",
        "--images-per-batch",
        "5",
        "--seed",
        "3",
        "--size",
        "64",
        "--shift",
        "brightness=0.2",
        "--corrupt-fraction",
        "0.4",
    )
    assert out.returncode == 0, out.stderr
    for bid in ("batch-0000", "batch-0001"):
        marker = json.loads((tmp_path / "land" / bid / "batch.json").read_text())
        assert marker["batch_id"] == bid and marker["classes"] == ["square", "circle", "triangle"]
        assert "brightness=0.2" in marker["source"]
    assert "2 faulty" in out.stdout


@pytest.mark.unit
def test_synth_bad_shift_is_a_clear_error_not_a_traceback(cfg, tmp_path):
    out = cli("synth", "--landing", str(tmp_path), "--shift", "glow=3")
    assert out.returncode == 2
    assert "glow" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.asset
def test_status_json_reports_batches_section(cfg, instance):
    from cv_assets_tests.defs.ingest.test_ingest_assets import run_intake

    (s,) = land(cfg, images=10, corrupt_fraction=0.3)
    run_intake(cfg, instance, s.batch_id)
    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    b = status["batches"]
    assert b["landed"] == 1 and b["validated"] == 1
    assert b["images_landed"] == s.files_landed
    assert b["images_accepted"] + b["images_quarantined"] == b["images_landed"]
    assert b["images_quarantined"] == len(s.faults)
    for key in ("datasets", "models", "champion", "drift"):
        assert key in status
    text = cli("status")
    assert f"{s.files_landed} landed" in text.stdout


@pytest.mark.unit
def test_doctor_passes_on_a_prepared_home_and_fails_on_unwritable_storage(cfg, tmp_path):
    env = dict(os.environ) | {"YOLO_OFFLINE": "1"}
    ok = cli("doctor", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS  dagster: 1.13.27" in ok.stdout and "artifact store" in ok.stdout
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    bad = cli("doctor", env=env | {"CV_ASSETS_ARTIFACTS": str(blocked / "sub")})
    assert bad.returncode == 1
    assert "FAIL  artifact store" in bad.stdout
