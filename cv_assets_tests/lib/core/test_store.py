import json
from pathlib import Path

import pytest

from cv_assets.lib.core.store import ArtifactStore, s3_client, split_s3_uri
from cv_assets.lib.ingest.landing import LandingZone
from cv_assets.lib.synth.batches import CLASSES, write_batches


@pytest.mark.unit
def test_local_put_is_atomic_and_hashed(tmp_path):
    store = ArtifactStore(str(tmp_path / "a"))
    ref = store.put_bytes("x/y.bin", b"hello")
    assert ref.uri == str(tmp_path / "a" / "x" / "y.bin")
    assert ref.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.verify(ref) == b"hello"
    assert [p.name for p in (tmp_path / "a" / "x").iterdir()] == ["y.bin"]  # no temp left behind


@pytest.mark.unit
def test_failed_local_write_leaves_the_old_artifact_intact(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put_bytes("m.json", b"old")

    src = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError):
        store.put_file("m.json", src)
    assert store.get_bytes("m.json") == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.unit
def test_tampered_artifact_is_refused_by_verify(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.put_bytes("w.pt", b"weights")
    Path(ref.uri).write_bytes(b"evil")
    with pytest.raises(ValueError, match=r"sha256 is .* the artifact record says"):
        store.verify(ref)


@pytest.mark.unit
def test_keys_cannot_escape_the_store_root(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("../outside.txt", b"x")


@pytest.mark.integration
def test_s3_store_round_trip_through_a_real_server(s3_bucket, s3_endpoint):
    store = ArtifactStore(f"{s3_bucket}/artifacts", s3_endpoint_url=s3_endpoint)
    ref = store.put_bytes("raw/b1/manifest.json", b'{"a": 1}')
    assert ref.uri == f"{s3_bucket}/artifacts/raw/b1/manifest.json"
    assert store.exists("raw/b1/manifest.json") and not store.exists("raw/b1/nope")
    assert store.list("raw/") == ["raw/b1/manifest.json"]
    assert store.key_of(ref.uri) == "raw/b1/manifest.json"
    assert store.verify(ref) == b'{"a": 1}'
    bucket, key = split_s3_uri(ref.uri)
    obj = s3_client(s3_endpoint).get_object(Bucket=bucket, Key=key)
    assert obj["Body"].read() == b'{"a": 1}'


@pytest.mark.integration
def test_s3_landing_zone_lists_only_complete_batches(s3_bucket, s3_endpoint, tmp_path):
    (s,) = write_batches(tmp_path, 1, 4, seed=1, size=64)
    client = s3_client(s3_endpoint)
    bucket, _ = split_s3_uri(s3_bucket)
    for f in sorted(s.path.rglob("*")):
        if f.is_file():
            client.put_object(
                Bucket=bucket, Key=f"landing/{f.relative_to(tmp_path)}", Body=f.read_bytes()
            )
    client.put_object(Bucket=bucket, Key="landing/half-landed/images/a.jpg", Body=b"x")
    zone = LandingZone(f"{s3_bucket}/landing", s3_endpoint_url=s3_endpoint)
    complete, _ = zone.scan()
    assert list(complete) == [s.batch_id]
    m = zone.manifest(s.batch_id, CLASSES)
    local = LandingZone(str(tmp_path)).manifest(s.batch_id, CLASSES)
    assert m.sha256 == local.sha256
    assert json.loads(zone.read(s.batch_id, "batch.json"))["classes"] == list(CLASSES)
