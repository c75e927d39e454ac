"""The signed release channel: the manifest an app polls, its Ed25519 signature, the rollout.

A channel (``stable``, ``beta``) is one small JSON file, ``channels/<channel>/manifest.json``, under
a release root that any static web server or the platform's artifact store serves. It names one
model version, the files for each platform with their sha256 and size, the input/output contract
the app needs to run them, the oldest app version that can, and the share of installs that should
take it. The app pins the release public key and refuses a manifest that is not signed by it.

``sequence`` grows by one with every manifest published to a channel (a publish, a rollout change,
a rollback). A client refuses a manifest whose sequence is lower than the last it accepted, so an
attacker (or a stale cache) replaying an older, validly signed manifest cannot downgrade an app; a
rollback is therefore a new manifest, with a higher sequence, that names the previous version.

This module is pure (no I/O but the ``put``/``get`` callables it is handed) and is shared by the
platform that publishes and by the reference client (``cv_assets/client/release_client.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

CHANNELS = ("stable", "beta")
FORMAT = 1  # manifest format version; a client refuses formats it does not know
PLATFORMS = ("onnx", "android", "ios")
FILE_FORMATS = ("onnx_int8", "onnx_fp32", "ort", "tflite", "tflite_int8", "mlpackage")
MANIFEST_FIELDS = (
    "format", "channel", "model_version", "sequence", "previous_version", "created_at",
    "expires_at", "min_app_version", "rollout_percent", "contract", "files", "notes",
)  # fmt: skip
FILE_FIELDS = ("platform", "format", "url", "sha256", "size")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_APP_VERSION = re.compile(r"\d+(\.\d+)*")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class ManifestError(ValueError):
    """A manifest or envelope the client must refuse; ``reason`` is a stable code for telemetry.

    Codes: ``not_json``, ``unsigned``, ``wrong_key``, ``bad_signature``, ``bad_manifest``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _time(dt: datetime, name: str) -> str:
    if dt.tzinfo is None:
        raise ManifestError("bad_manifest", f"{name} {dt} has no time zone; give it in UTC")
    return dt.astimezone(UTC).strftime(_TIME)


def parse_time(value: str) -> datetime:
    """A manifest timestamp (``2025-01-31T12:00:00Z``) as an aware UTC datetime."""
    return datetime.strptime(value, _TIME).replace(tzinfo=UTC)


def build_manifest(
    *,
    channel: str,
    model_version: str,
    sequence: int,
    files: list[dict],
    contract: dict,
    min_app_version: str,
    rollout_percent: float,
    created_at: datetime,
    expires_at: datetime,
    previous_version: str | None,
    notes: str = "",
) -> dict:
    """A validated, unsigned manifest (see ``validate_manifest`` for the rules).

    Args:
        sequence: one more than the channel's current manifest (``next_sequence``).
        files: ``{"platform", "format", "url", "sha256", "size"}`` each; ``url`` relative to the
            release root, e.g. ``files/v3/model.int8.onnx`` (``file_key``).
        expires_at: after this a client refuses the manifest, so a publisher that stops
            re-signing cannot leave apps on a stale one forever.
        previous_version: the version this one replaces, for the rollback's notes and audit.
    """
    manifest = {
        "format": FORMAT,
        "channel": channel,
        "model_version": model_version,
        "sequence": sequence,
        "previous_version": previous_version,
        "created_at": _time(created_at, "created_at"),
        "expires_at": _time(expires_at, "expires_at"),
        "min_app_version": min_app_version,
        "rollout_percent": rollout_percent,
        "contract": contract,
        "files": [dict(f) for f in files],
        "notes": notes,
    }
    return validate_manifest(manifest)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError("bad_manifest", message)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_file(i: int, f: Any) -> None:
    _check(isinstance(f, dict), f"files[{i}] is not an object")
    missing = [k for k in FILE_FIELDS if k not in f]
    _check(not missing, f"files[{i}] lacks {', '.join(missing)}")
    _check(f["platform"] in PLATFORMS, f"files[{i}].platform {f['platform']!r} not in {PLATFORMS}")
    _check(f["format"] in FILE_FORMATS, f"files[{i}].format {f['format']!r} not in {FILE_FORMATS}")
    url = f["url"]
    _check(
        isinstance(url, str)
        and bool(url)
        and not url.startswith("/")
        and "\\" not in url
        and ":" not in url
        and ".." not in url.split("/"),
        f"files[{i}].url {url!r} must be a path relative to the release root, without '..'",
    )
    sha = f["sha256"]
    _check(isinstance(sha, str) and bool(_SHA256.fullmatch(sha)),
           f"files[{i}].sha256 must be 64 lowercase hex digits")  # fmt: skip
    _check(_is_int(f["size"]) and f["size"] > 0, f"files[{i}].size must be a positive integer")
    _check(isinstance(f.get("io", {}), dict), f"files[{i}].io is not an object")


def validate_manifest(manifest: Any) -> dict:
    """``manifest`` itself when every field is present and valid, else ``ManifestError``.

    Rules: format is ``FORMAT``; channel in ``CHANNELS``; sequence an integer >= 1; versions
    are names of ``[A-Za-z0-9._-]``; ``min_app_version`` dotted integers; rollout_percent in
    [0, 100]; ``expires_at`` after ``created_at``; at least one file, each with a known platform
    and format, a relative url without ``..``, a 64-hex sha256 and a positive size.
    """
    _check(isinstance(manifest, dict), "the manifest is not an object")
    missing = [k for k in MANIFEST_FIELDS if k not in manifest]
    _check(not missing, f"the manifest lacks {', '.join(missing)}")
    m = manifest
    _check(m["format"] == FORMAT, f"format {m['format']!r} is not {FORMAT}")
    _check(m["channel"] in CHANNELS, f"channel {m['channel']!r} not in {CHANNELS}")
    for k in ("model_version", "previous_version"):
        v = m[k]
        _check((v is None and k == "previous_version")
               or (isinstance(v, str) and bool(_VERSION.fullmatch(v))),
               f"{k} {v!r} must be a name of letters, digits, '.', '_', '-'")  # fmt: skip
    _check(_is_int(m["sequence"]) and m["sequence"] >= 1, "sequence must be an integer >= 1")
    mav = m["min_app_version"]
    _check(isinstance(mav, str) and bool(_APP_VERSION.fullmatch(mav)),
           f"min_app_version {mav!r} must be dotted integers, e.g. 2.4.0")  # fmt: skip
    pct = m["rollout_percent"]
    _check(isinstance(pct, int | float) and not isinstance(pct, bool) and 0 <= pct <= 100,
           f"rollout_percent {pct!r} must be a number in 0..100")  # fmt: skip
    try:
        created, expires = parse_time(m["created_at"]), parse_time(m["expires_at"])
    except (TypeError, ValueError):
        raise ManifestError("bad_manifest", f"created_at and expires_at must be {_TIME}") from None
    _check(expires > created, f"expires_at {m['expires_at']} is not after {m['created_at']}")
    _check(isinstance(m["contract"], dict), "contract is not an object")
    _check(isinstance(m["notes"], str), "notes is not a string")
    _check(isinstance(m["files"], list) and bool(m["files"]), "files must be a non-empty list")
    for i, f in enumerate(m["files"]):
        _check_file(i, f)
    return manifest


def canonical(manifest: dict) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def generate_key() -> tuple[bytes, bytes]:
    """A new release key pair: (private PEM, PKCS8 unencrypted; public PEM, SubjectPublicKeyInfo).

    The private PEM is a secret: store it where the platform keeps secrets, never in the repo.
    """
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """The Ed25519 signing key in ``pem``; ``ValueError`` (without the key) for any other key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError("the release private key is not an unencrypted PEM key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the release private key is {type(key).__name__}, not Ed25519")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """The Ed25519 verifying key in ``pem``; ``ValueError`` for any other key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValueError("the release public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"the release public key is {type(key).__name__}, not Ed25519")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key: a short, public name for it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(manifest: dict, private_key: Ed25519PrivateKey) -> dict:
    """The signed envelope ``{"format", "key_id", "signature", "manifest"}`` for ``manifest``."""
    validate_manifest(manifest)
    signature = private_key.sign(canonical(manifest))
    return {
        "format": FORMAT,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
        "manifest": manifest,
    }


def verify(envelope: dict | bytes, public_key: Ed25519PublicKey) -> dict:
    """The manifest in ``envelope`` when it is signed by ``public_key`` and valid.

    Raises:
        ManifestError: ``not_json``, ``unsigned``, ``wrong_key``, ``bad_signature`` or
            ``bad_manifest`` (in that order of checking).
    """
    if isinstance(envelope, bytes | bytearray):
        try:
            envelope = json.loads(bytes(envelope).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError("not_json", f"the manifest file is not UTF-8 JSON ({e})") from None
    if not isinstance(envelope, dict):
        raise ManifestError("not_json", "the manifest file is not a JSON object")
    if not envelope.get("signature"):
        raise ManifestError("unsigned", "the manifest carries no signature")
    pinned = key_id(public_key)
    if envelope.get("key_id") != pinned:
        raise ManifestError(
            "wrong_key",
            f"the manifest is signed by key {str(envelope.get('key_id'))[:16]!r}, "
            f"this client pins key {pinned!r}",
        )
    manifest = envelope.get("manifest")
    if not isinstance(manifest, dict):
        raise ManifestError("bad_manifest", "the envelope has no manifest object")
    try:
        signature = base64.b64decode(str(envelope["signature"]), validate=True)
        public_key.verify(signature, canonical(manifest))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ManifestError(
            "bad_signature", f"the signature does not match the manifest (key {pinned!r})"
        ) from None
    if envelope.get("format") != FORMAT:
        raise ManifestError("bad_manifest", f"envelope format {envelope.get('format')!r}")
    return validate_manifest(manifest)


def rollout_bucket(install_id: str, channel: str, model_version: str) -> float:
    """An install's fixed place in [0, 100) for one model version on one channel.

    Salting with the channel and version gives each release a fresh draw, so the same installs
    are not always the first to get a new model.
    """
    digest = hashlib.sha256(f"{channel}:{model_version}:{install_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def in_rollout(install_id: str, manifest: dict) -> bool:
    """Whether this install takes the model: raising the percentage only adds installs."""
    bucket = rollout_bucket(install_id, manifest["channel"], manifest["model_version"])
    return bucket < manifest["rollout_percent"]


def app_version_tuple(version: str) -> tuple[int, ...]:
    """``"2.4"`` as ``(2, 4)``; ``ValueError`` if it is not dotted integers."""
    if not _APP_VERSION.fullmatch(version):
        raise ValueError(f"app version {version!r} is not dotted integers, e.g. 2.4.0")
    return tuple(int(p) for p in version.split("."))


def app_supported(manifest: dict, app_version: str) -> bool:
    """Whether ``app_version`` >= the manifest's ``min_app_version`` (``2.4`` equals ``2.4.0``)."""
    have, need = app_version_tuple(app_version), app_version_tuple(manifest["min_app_version"])
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


# The store layout, relative to a release root.


def manifest_key(channel: str) -> str:
    return f"channels/{channel}/manifest.json"


def history_key(channel: str, sequence: int) -> str:
    return f"channels/{channel}/history/{sequence:06d}.json"


def file_key(model_version: str, name: str) -> str:
    return f"files/v{model_version}/{name}"


def public_key_key() -> str:
    return "keys/release_ed25519.pub.pem"


def envelope_bytes(envelope: dict) -> bytes:
    """How an envelope is stored (readable; the signature covers ``canonical``, not these bytes)."""
    return json.dumps(envelope, indent=1, sort_keys=True, ensure_ascii=False).encode()


def next_sequence(get: Callable[[str], bytes | None], channel: str) -> int:
    """1 + the sequence of the channel's current manifest, or 1 for a channel never published."""
    raw = get(manifest_key(channel))
    if raw is None:
        return 1
    try:
        return int(json.loads(raw)["manifest"]["sequence"]) + 1
    except (ValueError, KeyError, TypeError):
        raise ManifestError(
            "bad_manifest", f"{manifest_key(channel)} has no readable manifest.sequence"
        ) from None


def write(put: Callable[[str, bytes], None], envelope: dict) -> str:
    """Store a signed envelope: its history entry first, the channel's manifest.json last.

    Written in that order so that a publish that dies half way never leaves a live manifest
    without its history entry. Returns the manifest key.
    """
    manifest = envelope["manifest"]
    data = envelope_bytes(envelope)
    put(history_key(manifest["channel"], manifest["sequence"]), data)
    key = manifest_key(manifest["channel"])
    put(key, data)
    return key
