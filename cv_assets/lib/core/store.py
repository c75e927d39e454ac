"""The artifact store: one interface over a local folder and an ``s3://`` prefix.

Every artifact (raw copies, standardised samples, tables, weights, reports) is written here and is
identified by its URI and sha256. Writes are atomic: a temporary file renamed into place locally,
one PUT on S3, so a reader never sees a half-written object.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol, TypedDict

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class StoredFile(TypedDict):
    """An artifact as a record names it: ``ArtifactRef.as_dict()``, stored as JSON."""

    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ArtifactRef:
    """What an asset passes downstream: where the artifact is and what it contains."""

    uri: str
    sha256: str
    size: int

    def as_dict(self) -> StoredFile:
        return {"uri": self.uri, "sha256": self.sha256, "size": self.size}


class _Backend(Protocol):
    def uri(self, key: str) -> str: ...
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[str]: ...
    def download(self, key: str, dest: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def link(self, src: str, dst: str) -> None: ...


class _LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._seq = itertools.count()

    def _path(self, key: str) -> Path:
        # A lexical check, not resolve(): keys come from our own code and resolving every path
        # costs a syscall per component on the ingest hot path.
        parts = PurePosixPath(key).parts
        if not parts or parts[0] == "/" or ".." in parts:
            raise ValueError(f"artifact key {key!r} escapes the store root {self.root}")
        return self.root.joinpath(*parts)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def _atomic(self, key: str, write: Any) -> None:
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{next(self._seq)}.tmp")
        try:
            f = open(tmp, "xb")  # noqa: SIM115 - closed below, before the rename
        except FileNotFoundError:
            dest.parent.mkdir(parents=True, exist_ok=True)
            f = open(tmp, "xb")  # noqa: SIM115
        try:
            with f:
                write(f)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def link(self, src: str, dst: str) -> None:
        """Hard-link an existing artifact under a second key (no bytes copied).

        Safe because artifacts are never modified in place: a rewrite is a rename of a new file.
        ``os.link`` is atomic on its own; only an existing destination needs a temp + rename.
        """
        s, d = self._path(src), self._path(dst)
        try:
            os.link(s, d)
            return
        except FileNotFoundError:
            if not s.exists():
                raise
            d.parent.mkdir(parents=True, exist_ok=True)
            return self.link(src, dst)
        except FileExistsError:
            if os.path.samefile(s, d):
                return
        except OSError:  # a filesystem without hard links: copy instead
            pass
        tmp = d.with_name(f".{d.name}.{os.getpid()}.{next(self._seq)}.tmp")
        try:
            os.link(s, tmp)
        except OSError:
            shutil.copyfile(s, tmp)
        os.replace(tmp, d)

    def put(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path) -> None:
        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, CHUNK)

        self._atomic(key, copy)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                yield str(Path(dirpath, name).relative_to(self.root))

    def download(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class _S3Backend:
    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client

    def _key(self, key: str) -> str:
        if ".." in Path(key).parts:
            raise ValueError(f"artifact key {key!r} escapes the store root")
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def put(self, key: str, data: bytes) -> None:
        # A single PUT is atomic on S3: readers see the old object or the new one, never a part.
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def list(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix) if prefix else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:]

    def download(self, key: str, dest: Path) -> None:
        dest.write_bytes(self.get(key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def link(self, src: str, dst: str) -> None:
        # Server-side copy: the bytes never travel through this process.
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        self.client.copy_object(Bucket=self.bucket, Key=self._key(dst), CopySource=source)


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client with retries suited to flaky networks (10 attempts, no retry quota).

    botocore's "standard" and "adaptive" modes share a client-wide retry quota (a circuit
    breaker): 500 tokens, 14 per retry, only 1 back per clean request. On an endpoint that fails
    a steady fraction of requests (30% in cv_assets_tests/integration/test_faults.py) the quota
    runs dry within a few thousand requests, and from then on the first error fails the run.
    "legacy" retries the same transient failures (5xx, throttling, dropped connections) with
    exponential backoff, request by request, without that quota.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # 32 connections: the duplicate index is read 32 objects at a time (lib/ingest/raw.py).
        config=Config(retries={"max_attempts": 10, "mode": "legacy"}, max_pool_connections=32),
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
    return bucket, prefix.strip("/")


class ArtifactStore:
    """Content-addressed-friendly blob store rooted at a local folder or an ``s3://`` prefix.

    Keys are relative POSIX paths (``raw/batch-0001/manifest.json``); URIs are what users see.
    """

    def __init__(self, root: str, s3_endpoint_url: str | None = None) -> None:
        self.root = root
        self._backend: _Backend
        if root.startswith("s3://"):
            bucket, prefix = split_s3_uri(root)
            self._backend = _S3Backend(bucket, prefix, s3_client(s3_endpoint_url))
        else:
            path = Path(root).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            self._backend = _LocalBackend(path)

    @property
    def is_s3(self) -> bool:
        return isinstance(self._backend, _S3Backend)

    def uri(self, key: str) -> str:
        return self._backend.uri(key)

    def key_of(self, uri: str) -> str:
        """The key of a URI this store produced (inverse of ``uri``)."""
        base = self._backend.uri("x")[:-1]
        if not uri.startswith(base):
            raise ValueError(f"{uri} is not inside the artifact store {self.root}")
        return uri[len(base) :]

    def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        self._backend.put(key, data)
        return ArtifactRef(self.uri(key), sha256_bytes(data), len(data))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> ArtifactRef:
        p = Path(path)
        digest = sha256_file(p)
        self._backend.put_file(key, p)
        return ArtifactRef(self.uri(key), digest, p.stat().st_size)

    def get_bytes(self, key: str) -> bytes:
        return self._backend.get(key)

    def exists(self, key: str) -> bool:
        return self._backend.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return list(self._backend.list(prefix))

    def download(self, key: str, dest: str | os.PathLike[str]) -> Path:
        d = Path(dest)
        d.parent.mkdir(parents=True, exist_ok=True)
        self._backend.download(key, d)
        return d

    def delete(self, key: str) -> None:
        self._backend.delete(key)

    def copy(self, src_key: str, dst_key: str) -> str:
        """The artifact at ``src_key`` also under ``dst_key``, without reading it here; its URI."""
        self._backend.link(src_key, dst_key)
        return self.uri(dst_key)

    def local_path(self, key: str) -> Path | None:
        """The file behind a key when the store is local (lets readers avoid a copy)."""
        if isinstance(self._backend, _LocalBackend):
            return self._backend._path(key)
        return None

    def verify(self, ref: ArtifactRef | Mapping[str, Any]) -> bytes:
        """The bytes of an artifact, refusing them when they no longer match the recorded hash."""
        r = (
            ref
            if isinstance(ref, ArtifactRef)
            else ArtifactRef(ref["uri"], ref["sha256"], ref["size"])
        )
        data = self.get_bytes(self.key_of(r.uri))
        got = sha256_bytes(data)
        if got != r.sha256:
            raise ValueError(
                f"{r.uri}: sha256 is {got}, the artifact record says {r.sha256}; refusing it"
            )
        return data
