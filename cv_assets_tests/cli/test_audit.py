"""``cv-assets audit`` as a user runs it: the audit set out, a labelling tool's export back in."""

import json

import pandas as pd

from cv_assets.lib.telemetry.audit import record_audit
from cv_assets.read_side import open_store
from cv_assets_tests.support.processes import cli


def _audit_day(cfg) -> list[str]:
    store = open_store(cfg)
    ids = [f"ev-{i}" for i in range(3)]
    rows = [
        {"event_id": e, "time": pd.Timestamp(f"2026-11-30T01:0{i}:00Z"), "sampling": "random",
         "image_uri": store.put_bytes(f"telemetry/frames/2026-11-30/{e}.jpg", b"jpeg").uri,
         "model_version": "1", "device_model": "Pixel 8", "app_version": "2.15.0",
         "detections": "[]", "input_width": 96, "input_height": 96}
        for i, e in enumerate(ids)
    ]  # fmt: skip
    assert record_audit(store, "2026-11-30", pd.DataFrame(rows)) == 3
    return ids


def test_export_label_import_and_status(cfg, tmp_path):
    ids = _audit_day(cfg)
    out = tmp_path / "frames"
    r = cli("audit", "export", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "3 audit frames to label" in r.stdout
    assert sorted(p.stem for p in (out / "images").iterdir()) == ids
    (out / "labels").mkdir()
    (out / "labels" / "ev-0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (out / "labels" / "ev-1.txt").write_text("0 0.5 0.5 0.2\n")
    r = cli("audit", "import", str(out))
    assert r.returncode == 0, r.stderr
    assert "read 2 label files: 1 accepted" in r.stdout and "1 quarantined" in r.stdout
    assert "labels/ev-1.txt:1: expected 5 columns (class cx cy w h), found 4" in r.stderr
    status = json.loads(cli("audit", "status", "--json").stdout)
    assert status["audit_frames"] == 3 and status["labelled"] == 1
    # What is labelled is not exported again.
    r = cli("audit", "export", "--out", str(tmp_path / "again"))
    assert "2 audit frames to label" in r.stdout


def test_an_import_of_a_folder_without_labels_says_what_it_expected(cfg, tmp_path):
    r = cli("audit", "import", str(tmp_path))
    assert r.returncode == 2
    assert f"{tmp_path}/labels/ holds no .txt label files (the YOLO export)" in r.stderr
