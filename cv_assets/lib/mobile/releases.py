"""Publishing a registered model to a release channel: its files, the signed manifest, history.

Everything lives under ``releases/`` in the artifact store (a local folder or an ``s3://``
prefix), laid out by ``channel`` so that any static web server or CDN can serve it as is:

- ``releases/files/v<version>/<file>``: the app files of a version that passed their checks;
- ``releases/channels/<channel>/manifest.json``: the channel's signed manifest (what apps fetch);
- ``releases/channels/<channel>/history/<sequence>.json``: every manifest the channel published;
- ``releases/keys/release_ed25519.pub.pem``: the public key, for people (apps pin their copy).

Every change to a channel (a publish, a new rollout percentage, a rollback) is a new manifest with
the next sequence number, signed with the release key. A rollback is a new manifest pointing at
the previous version, so an app never stays pinned to a revoked one: it refuses manifests older
than the newest it accepted, not versions older than the one it runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from cv_assets.lib.core.store import ArtifactStore
from cv_assets.lib.mobile import channel as ch
from cv_assets.lib.mobile.contract import file_io, io_contract

ROOT = "releases/"
# What each app-file format is for, and the name it is published under.
PLATFORM = {"onnx_int8": "onnx", "onnx_fp32": "onnx", "ort": "onnx", "tflite": "android",
            "tflite_int8": "android", "mlpackage": "ios"}  # fmt: skip
FILE_NAME = {"onnx_int8": "model_int8.onnx", "onnx_fp32": "model_fp32.onnx", "ort": "model.ort",
             "tflite": "model.tflite", "tflite_int8": "model_int8.tflite",
             "mlpackage": "model.mlpackage.zip"}  # fmt: skip


class ReleaseError(ValueError):
    """A channel operation that cannot be done (no key, nothing to roll back to...)."""


@dataclass(frozen=True)
class ReleaseSource:
    """A registered model version's app files, as the registry records them."""

    version: str
    imgsz: int
    classes: Sequence[str]
    files: Mapping[str, str]  # format -> URI in the artifact store
    failed: Mapping[str, str] = field(default_factory=dict)  # format -> why it is not shipped
    end2end: bool = False  # the files return final detections (YOLO26): no NMS in the app

    @classmethod
    def from_mobile(
        cls,
        version: str,
        imgsz: int,
        classes: Sequence[str],
        mobile: Mapping[str, Any],
        uri_tags: Mapping[str, str],
    ) -> ReleaseSource:
        """From a registry version's ``mobile`` tags: ``uri_tags`` names each format's URI tag,
        ``mobile_parity`` (JSON, format -> ``{"passed": ...}``) which files failed, and
        ``head_output`` whether they return final detections (``end2end``)."""
        files = {fmt: str(mobile[tag]) for fmt, tag in uri_tags.items() if mobile.get(tag)}
        parity = json.loads(str(mobile.get("mobile_parity") or "{}"))
        failed = {f: str(v.get("why") or "failed its check") for f, v in parity.items()
                  if isinstance(v, dict) and v.get("passed") is False}  # fmt: skip
        end2end = mobile.get("head_output") == "end2end"
        return cls(str(version), int(imgsz), list(classes), files, failed, end2end)


KEY_FILE_VAR, KEY_VAR = "CV_ASSETS_RELEASE_KEY_FILE", "CV_ASSETS_RELEASE_KEY"


def signing_key(pem: str | None, key_file: str | None) -> Any:
    """The Ed25519 private key (``CV_ASSETS_RELEASE_KEY`` PEM, else the file
    ``CV_ASSETS_RELEASE_KEY_FILE``); without one, a refusal that says how to make one."""
    data = (pem or "").encode()
    if not data and key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise ReleaseError(f"{KEY_FILE_VAR} names {path}, which is not a file")
        data = path.read_bytes()
    if not data:
        raise ReleaseError(
            "no release signing key: nothing is published unsigned. Make one with "
            "`cv-assets release keygen --out ~/.cv_assets_keys/release.pem` (outside the "
            f"repository) and export {KEY_FILE_VAR}=~/.cv_assets_keys/release.pem"
        )
    try:
        return ch.load_private_key(data)
    except Exception:  # the parser's own message could quote the key: say it in our words
        raise ReleaseError(
            f"the release key ({KEY_VAR} or {KEY_FILE_VAR}) is not an Ed25519 private key in PEM"
        ) from None


def write_key_pair(path: Path) -> Path:
    """A new Ed25519 key pair: the private PEM at ``path`` (created 0600, never over an existing
    file) and the public PEM at ``<path>.pub``, which it returns."""
    private, public = ch.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(public)
    return pub


def _get(store: ArtifactStore, key: str) -> bytes | None:
    return store.get_bytes(ROOT + key) if store.exists(ROOT + key) else None


def _put(store: ArtifactStore, key: str, data: bytes) -> None:
    store.put_bytes(ROOT + key, data)


def current(store: ArtifactStore, channel: str) -> dict[str, Any] | None:
    """The channel's signed envelope as published (not verified: the publisher wrote it)."""
    data = _get(store, ch.manifest_key(channel))
    return json.loads(data) if data else None


def history(store: ArtifactStore, channel: str) -> list[dict[str, Any]]:
    """Every manifest the channel published, oldest first."""
    prefix = f"{ROOT}channels/{channel}/history/"
    return [json.loads(store.get_bytes(k))["manifest"] for k in sorted(store.list(prefix))]


def stage_files(store: ArtifactStore, src: ReleaseSource) -> list[dict[str, Any]]:
    """Copy each shipped file under ``files/v<version>/`` and describe it for the manifest."""
    out = []
    for fmt, uri in sorted(src.files.items()):
        if fmt in src.failed or fmt not in FILE_NAME:
            continue
        key = ch.file_key(src.version, FILE_NAME[fmt])
        data = store.get_bytes(store.key_of(uri))
        ref = store.put_bytes(ROOT + key, data)
        io = file_io(fmt, src.imgsz, src.classes, end2end=src.end2end)
        out.append({"platform": PLATFORM[fmt], "format": fmt, "url": key, "sha256": ref.sha256,
                    "size": ref.size} | io)  # fmt: skip
    if not out:
        raise ReleaseError(f"version {src.version} has no app file that passed its checks")
    return out


def _sign_and_write(store: ArtifactStore, private_key: Any, manifest: dict[str, Any]) -> dict:
    envelope = ch.sign(manifest, private_key)
    ch.write(lambda k, d: _put(store, k, d), envelope)
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _put(store, ch.public_key_key(), pem)
    return envelope


def publish(
    store: ArtifactStore,
    private_key: Any,
    channel: str,
    src: ReleaseSource,
    *,
    now: datetime,
    rollout_percent: int = 100,
    min_app_version: str = "1.0.0",
    ttl: timedelta = timedelta(days=30),
    notes: str = "",
) -> dict[str, Any]:
    """Publish ``src`` to ``channel``: a new signed manifest whose previous version is the one the
    channel carried (unless it is the same version)."""
    before = current(store, channel)
    prev = before["manifest"] if before else None
    previous = prev["model_version"] if prev and prev["model_version"] != src.version else None
    if prev and previous is None:
        previous = prev.get("previous_version")
    contract = io_contract(src.imgsz, src.classes, end2end=src.end2end)
    manifest = ch.build_manifest(
        channel=channel, model_version=src.version,
        sequence=ch.next_sequence(lambda k: _get(store, k), channel),
        files=stage_files(store, src), contract=contract,
        min_app_version=min_app_version, rollout_percent=rollout_percent, created_at=now,
        expires_at=now + ttl, previous_version=previous,
        notes=notes or "; ".join(f"{f} not shipped: {why}" for f, why in src.failed.items()),
    )  # fmt: skip
    return _sign_and_write(store, private_key, manifest)


def reissue(
    store: ArtifactStore,
    private_key: Any,
    channel: str,
    *,
    now: datetime,
    rollout_percent: int | None = None,
    rollback: bool = False,
    ttl: timedelta = timedelta(days=30),
) -> dict[str, Any]:
    """A new manifest for the channel: the same version at another rollout percentage, or
    (``rollback``) the previous version's manifest again, re-signed with the next sequence."""
    before = current(store, channel)
    if before is None:
        raise ReleaseError(f"channel {channel!r} has published nothing yet")
    m: dict[str, Any] = dict(before["manifest"])
    if rollback:
        prev = m.get("previous_version")
        if not prev:
            raise ReleaseError(f"channel {channel!r} has no previous version to roll back to")
        earlier = [h for h in history(store, channel) if h["model_version"] == prev]
        if not earlier:
            raise ReleaseError(f"version {prev} was never published to {channel!r}")
        was = before["manifest"]["model_version"]
        m = {**earlier[-1], "notes": f"rollback from {was}"}
    manifest = ch.build_manifest(
        channel=channel, model_version=m["model_version"],
        sequence=ch.next_sequence(lambda k: _get(store, k), channel), files=m["files"],
        contract=m["contract"], min_app_version=m["min_app_version"],
        rollout_percent=m["rollout_percent"] if rollout_percent is None else rollout_percent,
        created_at=now, expires_at=now + ttl, previous_version=m.get("previous_version"),
        notes=m.get("notes", ""),
    )  # fmt: skip
    return _sign_and_write(store, private_key, manifest)
