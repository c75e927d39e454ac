import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.tracking import runs as tracking
from cv_assets.lib.tracking.registry import Registry, RegistryError, read_champion

pytestmark = pytest.mark.unit

DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.fixture
def reg(tmp_path):
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Registry(c, "det", ArtifactStore(str(tmp_path / "artifacts"))), c


def register(reg_c, sha: str, map50_95: float):
    """A version as the platform makes one: identities as tags, the evaluation as run metrics."""
    reg, c = reg_c
    run = tracking.start_run(c, "train", {})
    tracking.log_metrics(c, run, {"test_map50": map50_95 + 0.3, "test_map50_95": map50_95})
    return reg.register(
        f"/weights/{sha}",
        run,
        {
            "weights_sha256": sha,
            "weights_uri": f"/w/{sha}.pt",
            "dataset_version": "d1",
            "imgsz": "160",
            "class_names": '["a"]',
            "status": "registered",
        },
    )


def test_same_weights_register_once(reg):
    a = register(reg, "aaa", 0.5)
    assert register(reg, "aaa", 0.5).version == a.version
    assert register(reg, "bbb", 0.6).version != a.version


def test_promote_moves_alias_archives_previous_and_records_history(reg):
    r, _ = reg
    v1, v2 = register(reg, "aaa", 0.5), register(reg, "bbb", 0.6)
    r.promote(v1.version, "gate", "first model")
    e = r.promote(v2.version, "gate", "better")
    champ = r.champion()
    assert champ is not None and champ.version == v2.version and champ.status == "champion"
    assert r.get(v1.version).status == "archived"
    assert e["previous"] == v1.version and e["metrics_before"]["map50_95"] == 0.5
    assert e["metrics_after"]["map50_95"] == 0.6 and e["who"] == "gate"


def test_rollback_walks_back_through_champions(reg):
    r, _ = reg
    v = [register(reg, s, m) for s, m in (("a", 0.1), ("b", 0.2), ("c", 0.3))]
    for m in v:
        r.promote(m.version, "gate", "ok")
    r.rollback("alice", "bad in the field")
    assert r.champion().version == v[1].version  # type: ignore[union-attr]
    r.rollback("alice", "still bad")
    assert r.champion().version == v[0].version  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="no previous champion"):
        r.rollback("alice", "again")
    assert [h["action"] for h in r.history()][-2:] == ["rollback", "rollback"]


def test_pending_approval_does_not_move_the_alias(reg):
    r, _ = reg
    v1, v2 = register(reg, "a", 0.1), register(reg, "b", 0.2)
    r.promote(v1.version, "gate", "first")
    r.hold_for_approval(v2.version, "gate", "passed the gate")
    assert r.champion().version == v1.version  # type: ignore[union-attr]
    assert r.get(v2.version).status == "pending_approval"


def test_every_alias_move_republishes_the_champion_pointer_with_its_mobile_files(reg):
    r, _ = reg
    assert read_champion(r.store) is None
    v1, v2 = register(reg, "aaa", 0.5), register(reg, "bbb", 0.6)
    r.set_tags(v1.version, {"onnx_uri": "/m/1.onnx", "app_format": "onnx_int8"})
    r.set_tags(v2.version, {"onnx_uri": "/m/2.onnx", "app_format": "onnx_fp32"})
    r.promote(v1.version, "gate", "first")
    p = read_champion(r.store)
    assert p is not None and p["version"] == v1.version and p["mobile"]["onnx_uri"] == "/m/1.onnx"
    r.promote(v2.version, "gate", "better")
    assert read_champion(r.store)["mobile"]["app_format"] == "onnx_fp32"  # type: ignore[index]
    r.rollback("alice", "bad in the field")
    p = read_champion(r.store)
    assert p is not None and p["version"] == v1.version and p["mobile"]["onnx_int8_uri"] is None


def test_metrics_come_from_mlflow_metrics_and_old_versions_keep_their_metric_tags(reg):
    r, c = reg
    v = register(reg, "aaa", 0.5)
    assert (v.map50, v.map50_95) == (0.8, 0.5) and "map50" not in c.get_model_version(
        "det", "1"
    ).tags
    run = tracking.start_run(c, "train", {})
    old = {"weights_sha256": "old", "map50": "0.7", "map50_95": "0.4"}  # before metrics left tags
    assert r.register("/weights/old", run, old).map50_95 == 0.4


def test_no_registered_model_or_no_alias_means_no_champion(reg):
    r, _ = reg
    assert r.champion() is None and r.versions() == []
    register(reg, "aaa", 0.5)
    assert r.champion() is None and len(r.versions()) == 1
    with pytest.raises(RegistryError, match="det has no version 7"):
        r.get("7")


def test_an_unreachable_tracking_server_is_an_error_naming_it_not_no_champion(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, no back-off
    down = Registry(tracking.client(DOWN), "det", ArtifactStore(str(tmp_path / "artifacts")))
    for read in (down.champion, down.versions, lambda: down.get("1")):
        with pytest.raises(tracking.TrackingUnavailable, match=f"MLflow tracking at {DOWN}"):
            read()
    # The probe fails before anything is written; the CLI shows it as one line (an OSError).
    with pytest.raises(OSError, match=f"{DOWN} is unreachable.*reading registered model det"):
        down.register("/weights/aaa", "run", {"weights_sha256": "aaa"})
    assert read_champion(down.store) is None


def test_a_version_mlflow_refuses_leaves_no_registered_model_behind(reg):
    r, c = reg
    run = tracking.start_run(c, "train", {})
    with pytest.raises(RegistryError, match=r"MLflow at sqlite:///.* refused a version of det"):
        r.register("/weights/aaa", run, {"weights_sha256": "aaa", "k" * 300: "too long a key"})
    assert r._registered_model() is None and r.champion() is None
    assert register(reg, "aaa", 0.5).version == "1"  # a retry starts clean
