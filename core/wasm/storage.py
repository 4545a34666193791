"""Where module binaries and the files modules read and write live.

``open_storage(url)``: ``file:///abs/dir`` or a plain directory path → :class:`LocalStorage`;
``s3://bucket/prefix`` → :class:`S3Storage` (boto3, imported on first use; ``endpoint_url``
for any S3-compatible store such as MinIO or moto's server, else ``AWS_ENDPOINT_URL``).
Keys are ``/``-separated relative paths; ``..`` is refused.
"""

from __future__ import annotations

import abc
import os
import posixpath
import tempfile
from typing import Any

__all__ = ["LocalStorage", "S3Storage", "Storage", "open_storage"]


def _clean_key(key: str) -> str:
    key = str(key).replace("\\", "/").lstrip("/")
    if not key or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return posixpath.normpath(key)


class Storage(abc.ABC):
    url: str

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes at ``key``; ``FileNotFoundError`` when there are none."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` atomically (readers see the old or the new bytes)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.url = "file://" + self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *_clean_key(key).split("/"))

    def get(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(data))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        out = []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix.lstrip("/")):
                    out.append(rel)
        return sorted(out)


class S3Storage(Storage):
    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        from active_data_flow.connectors import s3

        bucket, prefix = s3.parse_url(url if url.endswith("/") else url + "/")
        self.bucket, self.prefix = bucket, prefix
        self.url = url.rstrip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = None

    def _c(self) -> Any:
        if self._client is None:
            from active_data_flow.connectors import s3

            self._client = s3.client(self.endpoint_url)
        return self._client

    def _key(self, key: str) -> str:
        return self.prefix + _clean_key(key)

    def get(self, key: str) -> bytes:
        try:
            return bytes(self._c().get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from exc
            raise

    def put(self, key: str, data: bytes) -> None:
        self._c().put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))

    def delete(self, key: str) -> None:
        self._c().delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._c().head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        out = []
        paginator = self._c().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix.lstrip("/")):
            for obj in page.get("Contents", []):
                out.append(obj["Key"][len(self.prefix):])
        return sorted(out)


def open_storage(url: str | os.PathLike[str], *, endpoint_url: str | None = None) -> Storage:
    text = os.fspath(url)
    if text.startswith("s3://"):
        return S3Storage(text, endpoint_url=endpoint_url)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return LocalStorage(text)
