"""app_release and `cv-assets release` on a real instance, fetched by the reference client over
real HTTP: nothing is published without a key; with one, the champion goes to beta, signed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest

from cv_assets.client.release_client import ReleaseClient
from cv_assets.definitions import build_defs
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.mobile import releases
from cv_assets.read_side import open_store
from cv_assets_tests.support.jobs import QUIET, materialized, train
from cv_assets_tests.support.processes import REPO, cli
from cv_assets_tests.support.release_server import ReleaseServer

pytestmark = pytest.mark.slow


def release_only(cfg: PlatformConfig, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_defs(cfg).resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey("app_release")})  # fmt: skip
    return job.execute_in_process(instance=instance, run_config=QUIET)


def test_the_champion_is_published_signed_only_with_a_key_and_the_client_installs_it(
    small_home, instance, tmp_path, monkeypatch
):
    cfg = small_home
    r = train(dataclasses.replace(cfg, phone_files=True), instance)
    assert r.success and materialized(r, "champion_model") is not None
    # No key: the training run succeeds, nothing is published, and the log says how to make one.
    assert materialized(r, "app_release") is None
    assert not open_store(cfg).list(releases.ROOT)
    warned = [e.user_message for e in instance.all_logs(r.run_id)
              if "not published: no release signing key" in e.user_message]  # fmt: skip
    assert warned, "the run's log says why nothing was published"
    refused = cli("release", "publish", "1", "--channel", "beta")
    assert refused.returncode == 2 and "cv-assets release keygen" in refused.stderr

    # A key is never made where git could commit it; an ignored place or outside is fine.
    inside = REPO / "cv_assets" / "release-test.pem"
    bad = cli("release", "keygen", "--out", str(inside))
    assert bad.returncode == 2 and not inside.exists()
    key = tmp_path / "keys" / "release.pem"
    made = cli("release", "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert key.stat().st_mode & 0o777 == 0o600 and (key.parent / "release.pem.pub").exists()
    monkeypatch.setenv("CV_ASSETS_RELEASE_KEY_FILE", str(key))
    cfg = PlatformConfig.from_env()

    out = release_only(cfg, instance)
    meta = materialized(out, "app_release")
    assert meta is not None and meta["model_version"] == "1" and meta["beta_sequence"] == 1
    assert key.read_text().splitlines()[1] not in json.dumps(meta, default=str)
    store = open_store(cfg)
    root = store.local_path(releases.ROOT.rstrip("/"))
    assert root is not None
    server = ReleaseServer(root)
    server.start()
    try:
        client = ReleaseClient(
            server.url, (key.parent / "release.pem.pub").read_bytes(), "onnx",
            ("onnx_int8", "onnx_fp32"), "1.0.0", "install-1", tmp_path / "app", channel="beta",
        )  # fmt: skip
        got = client.update()
        assert (got.status, got.model_version) == ("installed", "1"), got
        champ = out.output_for_node("app_release")["channels"]["beta"]
        shipped = {f["format"]: f["sha256"] for f in champ["files"]}
        assert got.model_path is not None
        digest = hashlib.sha256(got.model_path.read_bytes()).hexdigest()
        assert digest in shipped.values()
        # Each phone gets its own file, verified the same way, with the I/O it needs to run it.
        files = {f["format"]: f for f in champ["files"]}
        assert files["tflite"]["io"]["output"]["box_scale"] == 64
        assert files["mlpackage"]["io"]["output"]["nms_in_graph"] is True
        assert "io" not in files["onnx_fp32"]
        for platform, formats, names in (
            ("android", ("tflite_int8", "tflite"), {"v1-model_int8.tflite", "v1-model.tflite"}),
            ("ios", ("mlpackage",), {"v1-model.mlpackage.zip"}),
        ):
            phone = ReleaseClient(
                server.url, (key.parent / "release.pem.pub").read_bytes(), platform, formats,
                "1.0.0", "install-1", tmp_path / platform, channel="beta",
            )  # fmt: skip
            on_phone = phone.update()
            assert on_phone.status == "installed" and on_phone.model_path is not None, on_phone
            assert on_phone.model_path.name in names
        # Materialized again with the same champion: the manifest is not re-signed.
        again = materialized(release_only(cfg, instance), "app_release")
        assert again is not None and again["beta_sequence"] == 1
        assert client.update().status == "up_to_date"

        # A person moves stable, then its rollout; apps follow the newest signed manifest.
        pub = cli("release", "publish", "1", "--channel", "stable", "--rollout", "10")
        assert pub.returncode == 0, pub.stderr
        assert cli("release", "rollout", "100", "--channel", "stable").returncode == 0
        shown = cli("release", "show", "--json")
        channels = json.loads(shown.stdout)
        assert channels["stable"]["manifest"]["sequence"] == 2
        assert channels["stable"]["manifest"]["rollout_percent"] == 100
        nothing = cli("release", "rollback", "--channel", "stable")
        assert nothing.returncode == 2 and "no previous version" in nothing.stderr
    finally:
        server.stop()
    assert not Path(REPO / "cv_assets" / "release-test.pem").exists()
