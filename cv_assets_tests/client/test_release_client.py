"""The reference client against a real HTTP server on 127.0.0.1 that serves a release root and
injects faults per path. After every refusal or failure the installed model must be untouched."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cv_assets.client.release_client import ReleaseClient, UpdateResult
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile.contract import io_contract
from cv_assets_tests.support.release_server import ReleaseServer

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
NAME = "model.int8.onnx"
FAULTS = ("404", "500", "truncated", "error_mid_body", "html")


def payload(version: str) -> bytes:
    # 200 KB: several reads of the client's 64 KiB chunks, so faults land mid-download.
    return random.Random(version).randbytes(200_000)


@dataclass
class Release:
    """A release root on disk, published the way the platform does (``channel.write``)."""

    root: Path
    private: Ed25519PrivateKey
    public_pem: bytes
    server: ReleaseServer
    envelopes: dict[int, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes) -> None:
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / key).write_bytes(data)

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def file_path(self, version: str) -> Path:
        return self.root / ch.file_key(version, NAME)

    def publish(
        self,
        version: str,
        *,
        rollout: float = 100,
        min_app: str = "1.0",
        expires: datetime = T0 + timedelta(days=30),
        previous: str | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> dict:
        data = payload(version)
        if self.get(ch.file_key(version, NAME)) is None:
            self.put(ch.file_key(version, NAME), data)
        files = [
            {"platform": "android", "format": "ort", "url": ch.file_key(version, "model.ort"),
             "sha256": "0" * 64, "size": 1},
            {"platform": "onnx", "format": "onnx_int8", "url": ch.file_key(version, NAME),
             "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        ]  # fmt: skip
        m = ch.build_manifest(
            channel="stable", model_version=version, sequence=ch.next_sequence(self.get, "stable"),
            files=files, contract=io_contract(320, ["square", "circle", "triangle"]),
            min_app_version=min_app, rollout_percent=rollout, created_at=T0, expires_at=expires,
            previous_version=previous,
        )  # fmt: skip
        envelope = ch.sign(m, key or self.private)
        ch.write(self.put, envelope)
        self.envelopes[m["sequence"]] = ch.envelope_bytes(envelope)
        return m

    def edit_manifest(self, fn: Callable[[dict], None]) -> None:
        key = ch.manifest_key("stable")
        envelope = json.loads(self.get(key) or b"")
        fn(envelope)
        self.put(key, json.dumps(envelope).encode())


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Release]:
    private_pem, public_pem = ch.generate_key()
    root = tmp_path / "release"
    root.mkdir()
    server = ReleaseServer(root)
    server.start()
    try:
        yield Release(root, ch.load_private_key(private_pem), public_pem, server)
    finally:
        server.stop()


def make_client(release: Release, tmp_path: Path, **over) -> ReleaseClient:
    args = {
        "base_url": release.server.url, "public_key_pem": release.public_pem,
        "platform": "onnx", "formats": ("onnx_int8", "onnx_fp32"), "app_version": "2.0.0",
        "install_id": "install-1", "state_dir": tmp_path / "app", "timeout_s": 10,
        "now": lambda: NOW,
    } | over  # fmt: skip
    return ReleaseClient(**args)


def leftovers(state_dir: Path) -> list[str]:
    """Temporary files an update could leave: partial downloads, half-written state or links."""
    return sorted(p.name for p in state_dir.rglob("*") if p.suffix in (".part", ".tmp"))


def assert_still(client: ReleaseClient, version: str, state_before: dict) -> None:
    path = client.model_path
    assert path is not None and path.read_bytes() == payload(version)
    assert client.state() == state_before
    assert leftovers(client.state_dir) == []
    assert sorted(p.name for p in (client.state_dir / "current").iterdir()) == [path.name]


def test_happy_path_installs_the_verified_file_once(release, tmp_path):
    client = make_client(release, tmp_path)
    assert client.model_path is None
    release.publish("1")
    r = client.update()
    assert (r.status, r.reason, r.model_version) == ("installed", "", "1")
    assert r.model_path == client.state_dir / "current" / f"v1-{NAME}"
    assert r.model_path is not None and r.model_path.read_bytes() == payload("1")
    state = client.state()
    assert state["sequence"] == 1 and state["file"] == f"v1-{NAME}" and state["previous"] is None
    assert state["sha256"] == hashlib.sha256(payload("1")).hexdigest()

    downloads = release.server.requests.count(f"/{ch.file_key('1', NAME)}")
    assert client.update().status == "up_to_date"
    assert release.server.requests.count(f"/{ch.file_key('1', NAME)}") == downloads

    release.publish("2", previous="1")
    r = client.update()
    assert (r.status, r.model_version) == ("installed", "2")
    assert r.model_path and r.model_path.read_bytes() == payload("2")
    assert client.state()["previous"]["model_version"] == "1"
    assert (client.state_dir / "previous" / f"v1-{NAME}").read_bytes() == payload("1")
    assert leftovers(client.state_dir) == []


def test_rollback_manifest_with_a_higher_sequence_installs_the_previous_version(release, tmp_path):
    client = make_client(release, tmp_path)
    release.publish("1")
    client.update()
    release.publish("2", previous="1")
    assert client.update().model_version == "2"
    m = release.publish("1", previous="2")  # the rollback: a NEW manifest naming version 1
    assert m["sequence"] == 3
    r = client.update()
    assert (r.status, r.model_version) == ("installed", "1")
    assert r.model_path and r.model_path.read_bytes() == payload("1")
    assert client.state()["sequence"] == 3
    assert client.state()["previous"]["model_version"] == "2"
    assert client.update().status == "up_to_date"


def test_rollback_local_switches_to_the_kept_previous_file_and_back(release, tmp_path):
    client = make_client(release, tmp_path)
    assert client.rollback_local().reason == "no_previous"
    release.publish("1")
    client.update()
    release.publish("2", previous="1")
    client.update()
    r = client.rollback_local()
    assert (r.status, r.reason, r.model_version) == ("installed", "local_rollback", "1")
    assert r.model_path and r.model_path.read_bytes() == payload("1")
    # The same manifest is not installed again: the rollback holds until the channel moves on.
    r = client.update()
    assert (r.status, r.reason, r.model_version) == ("up_to_date", "local_rollback", "1")
    r = client.rollback_local()
    assert r.model_version == "2" and r.model_path and r.model_path.read_bytes() == payload("2")
    assert leftovers(client.state_dir) == []
    release.publish("3", previous="2")
    assert client.update().model_version == "3"


def _tamper_file(release: Release) -> None:
    release.publish("2")
    data = bytearray(release.file_path("2").read_bytes())
    data[1000] ^= 0xFF
    release.file_path("2").write_bytes(bytes(data))


def _grow_file(release: Release) -> None:
    release.publish("2")
    release.file_path("2").write_bytes(payload("2") + b"extra")


def _tamper_manifest(release: Release) -> None:
    release.publish("2", rollout=1)
    release.edit_manifest(lambda e: e["manifest"].update(rollout_percent=100))


def _unsign(release: Release) -> None:
    release.publish("2")
    release.edit_manifest(lambda e: e.pop("signature"))


def _other_key(release: Release) -> None:
    release.publish("2", key=ch.load_private_key(ch.generate_key()[0]))


def _expired(release: Release) -> None:
    release.publish("2", expires=NOW - timedelta(minutes=1))


def _fault(fault: str, version: str | None = "2") -> Callable[[Release], None]:
    def setup(release: Release) -> None:
        release.publish("2")
        path = ch.file_key(version, NAME) if version else ch.manifest_key("stable")
        release.server.faults[f"/{path}"] = fault

    return setup


SCENARIOS = {
    "tampered_file": (_tamper_file, "refused", "hash_mismatch"),
    "file_larger_than_manifest": (_grow_file, "refused", "size_mismatch"),
    "tampered_manifest": (_tamper_manifest, "refused", "bad_signature"),
    "unsigned_manifest": (_unsign, "refused", "unsigned"),
    "manifest_of_another_key": (_other_key, "refused", "wrong_key"),
    "expired_manifest": (_expired, "refused", "expired"),
    "app_too_old": (lambda r: r.publish("2", min_app="2.0.1"), "refused", "app_too_old"),
    "truncated_download": (_fault("truncated"), "failed", "network"),
    "404_mid_download": (_fault("404"), "failed", "http_404"),
    "500_mid_download": (_fault("500"), "failed", "http_500"),
    "500_after_part_of_the_body": (_fault("error_mid_body"), "failed", "network"),
    "manifest_404": (_fault("404", None), "failed", "http_404"),
    "manifest_truncated": (_fault("truncated", None), "failed", "network"),
    "error_page_for_manifest": (_fault("html", None), "refused", "not_json"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fault_is_refused_and_the_installed_model_stays(release, tmp_path, scenario):
    setup, status, reason = SCENARIOS[scenario]
    client = make_client(release, tmp_path)
    release.publish("1")
    assert client.update().status == "installed"
    before = client.state()
    setup(release)
    r = client.update()
    assert (r.status, r.reason) == (status, reason), r.message
    assert (r.model_version, r.model_path) == ("1", client.model_path)
    assert_still(client, "1", before)
    if status == "failed":  # the network recovers: the next poll installs
        release.server.faults.clear()
        assert client.update().model_version == "2"


def test_replayed_older_manifest_is_a_refused_downgrade(release, tmp_path):
    client = make_client(release, tmp_path)
    release.publish("1")
    client.update()
    release.publish("2", previous="1")
    client.update()
    before = client.state()
    release.put(ch.manifest_key("stable"), release.envelopes[1])  # validly signed, but older
    r = client.update()
    assert (r.status, r.reason, r.model_version) == ("refused", "downgrade", "2")
    assert_still(client, "2", before)


def test_install_outside_the_rollout_keeps_its_model_until_the_share_grows(release, tmp_path):
    # An install whose bucket for version 2 is above 10 but below 50.
    install = next(i for i in (f"install-{n}" for n in range(1000))
                   if 10 <= ch.rollout_bucket(i, "stable", "2") < 50)  # fmt: skip
    client = make_client(release, tmp_path, install_id=install)
    release.publish("1")
    client.update()
    before = client.state()
    release.publish("2", rollout=10)
    r = client.update()
    assert (r.status, r.model_version) == ("not_in_rollout", "1")
    assert_still(client, "1", before)
    assert f"/{ch.file_key('2', NAME)}" not in release.server.requests
    release.publish("2", rollout=50)
    assert client.update().model_version == "2"


def test_no_file_for_the_platform_is_refused(release, tmp_path):
    client = make_client(release, tmp_path, platform="ios", formats=("mlpackage",))
    release.publish("1")
    r: UpdateResult = client.update()
    assert (r.status, r.reason, r.model_path) == ("refused", "no_file_for_platform", None)
    assert leftovers(client.state_dir) == []
