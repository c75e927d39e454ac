import base64
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile import releases
from cv_assets.lib.mobile.contract import io_contract
from cv_assets.lib.tracking.registry import URI_TAGS

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SHA = "ab" * 32


def files(version: str = "3") -> list[dict]:
    return [
        {"platform": "onnx", "format": "onnx_int8", "url": ch.file_key(version, "model.int8.onnx"),
         "sha256": SHA, "size": 1234},
        {"platform": "android", "format": "ort", "url": ch.file_key(version, "model.ort"),
         "sha256": "cd" * 32, "size": 2345},
    ]  # fmt: skip


def manifest(**over) -> dict:
    args = {
        "channel": "stable",
        "model_version": "3",
        "sequence": 4,
        "files": files(),
        "contract": io_contract(320, ["square", "circle", "triangle"]),
        "min_app_version": "2.4.0",
        "rollout_percent": 10,
        "created_at": T0,
        "expires_at": T0 + timedelta(days=30),
        "previous_version": "2",
        "notes": "détecteur v3",
    } | over
    return ch.build_manifest(**args)


@pytest.fixture(scope="module")
def keys():
    private, public = ch.generate_key()
    return ch.load_private_key(private), ch.load_public_key(public)


def reason(fn, *args) -> str:
    with pytest.raises(ch.ManifestError) as e:
        fn(*args)
    return e.value.reason


def test_io_contract_states_the_model_cards_facts():
    c = io_contract(640, ["a", "b"])
    assert c["input"]["name"] == "images" and c["input"]["shape"] == [1, 3, 640, 640]
    assert c["input"]["letterbox"]["pad_value"] == 114 and c["input"]["colour"] == "RGB"
    # 80^2 + 40^2 + 20^2 anchors at 640, one row per box coordinate and class
    assert c["output"]["shape"] == [1, 6, 8400] and c["output"]["nms_in_graph"] is False
    assert c["postprocess"]["nms"] == {"iou": 0.7, "class_wise": True}
    assert c["postprocess"]["confidence"] == 0.25 and c["classes"] == ["a", "b"]


def test_io_contract_of_an_end_to_end_head_says_final_detections_and_no_nms():
    e2e, v11 = io_contract(64, ["a", "b", "c"], end2end=True), io_contract(64, ["a", "b", "c"])
    assert e2e["input"] == v11["input"] and e2e["classes"] == v11["classes"]
    # 8^2 + 4^2 + 2^2 = 84 anchors at 64 px, so the head's top-k returns 84 rows; 300 at 640.
    assert e2e["output"]["shape"] == [1, 84, 6] and e2e["output"]["end_to_end"] is True
    assert io_contract(640, ["a"], end2end=True)["output"]["shape"] == [1, 300, 6]
    assert "x1, y1, x2, y2 in input pixels, score, class" in e2e["output"]["format"]
    assert e2e["postprocess"]["nms"] is None and e2e["postprocess"]["confidence"] == 0.25
    assert "end_to_end" not in v11["output"] and v11["output"]["shape"] == [1, 7, 84]


def test_a_version_tagged_end_to_end_is_published_with_the_end_to_end_contract(keys, tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    tags = {"onnx_uri": store.put_bytes("mobile/k/model.onnx", b"onnx").uri,
            "tflite_uri": store.put_bytes("mobile/k/model.tflite", b"tflite").uri,
            "head_output": "end2end"}  # fmt: skip
    src = releases.ReleaseSource.from_mobile("2", 64, ["a", "b", "c"], tags, URI_TAGS)
    m = releases.publish(store, keys[0], "beta", src, now=T0)["manifest"]
    assert m["contract"] == io_contract(64, ["a", "b", "c"], end2end=True)
    shipped = {f["format"]: f for f in m["files"]}
    lite = shipped["tflite"]["io"]["output"]
    assert lite["end_to_end"] and lite["box_scale"] == 1 and lite["shape"] == [1, 84, 6]
    assert "io" not in shipped["onnx_fp32"]
    # A version registered before the tag existed is a one-to-many head's, as it was.
    before = releases.ReleaseSource.from_mobile("1", 64, ["a"], tags | {"head_output": None},
                                                URI_TAGS)  # fmt: skip
    assert not before.end2end and not src.failed


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"channel": "nightly"}, "channel 'nightly'"),
        ({"rollout_percent": 101}, "rollout_percent 101"),
        ({"rollout_percent": -1}, "rollout_percent -1"),
        ({"sequence": 0}, "sequence"),
        ({"expires_at": T0}, "expires_at"),
        ({"min_app_version": "2.x"}, "min_app_version"),
        ({"files": []}, "non-empty"),
        ({"files": [files()[0] | {"sha256": "ab" * 31}]}, "files[0].sha256"),
        ({"files": [files()[0] | {"sha256": "AB" * 32}]}, "files[0].sha256"),
        ({"files": [files()[0] | {"url": "files/../keys/x.pem"}]}, "without '..'"),
        ({"files": [files()[0] | {"url": "/etc/passwd"}]}, "files[0].url"),
        ({"files": [files()[0] | {"url": "https://evil.example/m.onnx"}]}, "files[0].url"),
        ({"files": [files()[0] | {"platform": "web"}]}, "files[0].platform"),
        ({"files": [files()[0] | {"size": 0}]}, "files[0].size"),
    ],
)
def test_invalid_manifest_is_refused_naming_the_field(over, words):
    with pytest.raises(ch.ManifestError) as e:
        manifest(**over)
    assert e.value.reason == "bad_manifest" and words in e.value.message


def test_naive_timestamps_are_refused():
    with pytest.raises(ch.ManifestError, match="no time zone"):
        manifest(created_at=datetime(2025, 3, 1))


def test_timestamps_are_utc_seconds():
    m = manifest(created_at=T0.replace(microsecond=5))
    assert m["created_at"] == "2025-03-01T12:00:00Z"
    assert ch.parse_time(m["expires_at"]) == T0 + timedelta(days=30)


def test_canonical_bytes_are_stable_and_key_order_free():
    m = manifest()
    shuffled = dict(reversed(list(m.items())))
    assert ch.canonical(m) == ch.canonical(shuffled)
    assert ch.canonical(m) == ch.canonical(json.loads(ch.canonical(m)))
    text = ch.canonical(m).decode("utf-8")
    # sorted keys, no spaces between tokens, non-ASCII kept as UTF-8
    assert text.startswith('{"channel":"stable","contract":{"classes":["square","circle"')
    assert text.endswith(
        '"notes":"détecteur v3","previous_version":"2","rollout_percent":10,"sequence":4}'
    )


def test_sign_verify_round_trip(keys):
    private, public = keys
    env = ch.sign(manifest(), private)
    assert env["format"] == ch.FORMAT and env["key_id"] == ch.key_id(public)
    assert len(base64.b64decode(env["signature"])) == 64
    assert ch.verify(env, public) == manifest()
    assert ch.verify(ch.envelope_bytes(env), public) == manifest()


def test_tampered_manifest_is_bad_signature(keys):
    private, public = keys
    env = ch.sign(manifest(), private)
    env["manifest"]["rollout_percent"] = 100
    assert reason(ch.verify, env, public) == "bad_signature"
    env = ch.sign(manifest(), private)
    env["signature"] = "not base64!"
    assert reason(ch.verify, env, public) == "bad_signature"


def test_manifest_signed_by_another_key_is_wrong_key(keys):
    _, public = keys
    other = ch.load_private_key(ch.generate_key()[0])
    env = ch.sign(manifest(), other)
    with pytest.raises(ch.ManifestError) as e:
        ch.verify(env, public)
    assert e.value.reason == "wrong_key" and ch.key_id(public) in e.value.message
    # A forged key_id does not help: the signature is still checked against the pinned key.
    env["key_id"] = ch.key_id(public)
    assert reason(ch.verify, env, public) == "bad_signature"


def test_unsigned_and_unreadable_envelopes_are_refused(keys):
    private, public = keys
    env = ch.sign(manifest(), private)
    assert reason(ch.verify, {k: v for k, v in env.items() if k != "signature"}, public) == (
        "unsigned"
    )
    assert reason(ch.verify, env | {"signature": ""}, public) == "unsigned"
    assert reason(ch.verify, b"<html>502</html>", public) == "not_json"
    assert reason(ch.verify, b"\xff\xfe", public) == "not_json"
    assert reason(ch.verify, b"[1, 2]", public) == "not_json"


def test_signed_but_invalid_manifest_is_bad_manifest(keys):
    private, public = keys
    m = manifest()
    del m["expires_at"]
    env = {"format": 1, "key_id": ch.key_id(public), "manifest": m,
           "signature": base64.b64encode(private.sign(ch.canonical(m))).decode()}  # fmt: skip
    with pytest.raises(ch.ManifestError, match="lacks expires_at"):
        ch.verify(env, public)


def test_error_messages_carry_no_key_material(keys):
    _, public = keys
    other_private, other_public = ch.generate_key()
    env = ch.sign(manifest(), ch.load_private_key(other_private))
    with pytest.raises(ch.ManifestError) as e:
        ch.verify(env, public)
    for pem in (other_private, other_public):
        assert pem.decode().splitlines()[1][:16] not in str(e.value)
    truncated = other_private[:60]
    with pytest.raises(ValueError, match="not an unencrypted PEM key") as e2:
        ch.load_private_key(truncated)
    assert truncated.decode().splitlines()[1][:16] not in str(e2.value)


def test_rollout_bucket_is_deterministic_and_salted_by_release():
    assert ch.rollout_bucket("i1", "stable", "3") == ch.rollout_bucket("i1", "stable", "3")
    assert 0 <= ch.rollout_bucket("i1", "stable", "3") < 100
    assert ch.rollout_bucket("i1", "stable", "3") != ch.rollout_bucket("i1", "stable", "4")
    assert ch.rollout_bucket("i1", "stable", "3") != ch.rollout_bucket("i1", "beta", "3")


def test_raising_the_rollout_only_adds_installs():
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
    reached_before: set[str] = set()
    for pct in (0, 1, 5, 10, 25, 50, 99.5, 100):
        m = manifest(rollout_percent=pct)
        reached = {i for i in ids if ch.in_rollout(i, m)}
        assert reached_before <= reached
        reached_before = reached
    assert len(reached_before) == len(ids)
    assert not any(ch.in_rollout(i, manifest(rollout_percent=0)) for i in ids)


@pytest.mark.parametrize(
    ("app", "need", "ok"),
    [("2.4.0", "2.4.0", True), ("2.4", "2.4.0", True), ("2.10", "2.9.9", True),
     ("2.3.99", "2.4", False), ("10.0", "9.0", True)],
)  # fmt: skip
def test_app_versions_compare_as_dotted_integers(app, need, ok):
    assert ch.app_supported(manifest(min_app_version=need), app) is ok


def test_next_sequence_and_write_keep_history_before_the_live_manifest(keys):
    private, _ = keys
    store: dict[str, bytes] = {}
    order: list[str] = []

    def put(key: str, data: bytes) -> None:
        order.append(key)
        store[key] = data

    assert ch.next_sequence(store.get, "stable") == 1
    for _ in range(3):
        seq = ch.next_sequence(store.get, "stable")
        ch.write(put, ch.sign(manifest(sequence=seq), private))
    assert ch.next_sequence(store.get, "stable") == 4
    assert ch.next_sequence(store.get, "beta") == 1
    assert order[:2] == ["channels/stable/history/000001.json", "channels/stable/manifest.json"]
    assert sorted(k for k in store if "/history/" in k) == [
        f"channels/stable/history/{i:06d}.json" for i in (1, 2, 3)
    ]
    assert store["channels/stable/manifest.json"] == store["channels/stable/history/000003.json"]


def test_store_keys():
    assert ch.manifest_key("beta") == "channels/beta/manifest.json"
    assert ch.history_key("stable", 12) == "channels/stable/history/000012.json"
    assert ch.file_key("3", "model.ort") == "files/v3/model.ort"
    assert ch.public_key_key() == "keys/release_ed25519.pub.pem"
