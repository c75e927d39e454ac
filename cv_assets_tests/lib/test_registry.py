import pytest

from cv_assets.lib import tracking
from cv_assets.lib.registry import Registry, RegistryError, read_champion
from cv_assets.lib.store import ArtifactStore

pytestmark = pytest.mark.unit


@pytest.fixture
def reg(tmp_path):
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Registry(c, "det", ArtifactStore(str(tmp_path / "artifacts"))), c


def register(reg_c, sha: str, map50_95: float):
    reg, c = reg_c
    run = tracking.start_run(c, "train", {})
    return reg.register(
        f"/weights/{sha}",
        run,
        {
            "weights_sha256": sha,
            "weights_uri": f"/w/{sha}.pt",
            "dataset_version": "d1",
            "map50": str(map50_95 + 0.3),
            "map50_95": str(map50_95),
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
