"""The little S3 the file connectors need: ranged reads, globbing, size, upload.

boto3 is imported on first use (``pip install 'active-data-flow[s3]'``); without it every
function raises :class:`~active_data_flow.errors.MissingExtraError`. ``endpoint_url`` selects an
S3-compatible store (MinIO, moto's server); when None boto3 reads ``AWS_ENDPOINT_URL``
itself. Credentials and region come from boto3's usual chain.

Globs (``s3://bucket/in/*.csv``, ``s3://bucket/logs/**/*.jsonl``) match keys like local
globs do: ``*`` and ``?`` stay within one ``/``-separated part, ``**/`` matches any number
of parts, ``[…]`` is a character class.
"""

from __future__ import annotations

import io
import re
import threading
from typing import Any

from active_data_flow.errors import MissingExtraError
from active_data_flow.retry import RetriesExhausted, RetryPolicy, retry_call

__all__ = [
    "client",
    "delete",
    "download",
    "glob_regex",
    "has_magic",
    "is_s3",
    "list_objects",
    "open_read",
    "parse_url",
    "size",
    "upload",
]

_clients: dict[tuple[str | None, str | None], Any] = {}
_lock = threading.Lock()
_MAGIC = re.compile(r"[*?\[]")
#: a ranged GET cut short (a reset, a timeout) is opened again where it stopped, a few times
_READ_RETRY = RetryPolicy(window_s=float("inf"), first_delay_s=0.1, max_delay_s=2.0, max_attempts=4)


def is_s3(path: str) -> bool:
    """Whether ``path`` is an ``s3://`` URL."""
    return path.startswith("s3://")


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` contains glob characters."""
    return _MAGIC.search(pattern) is not None


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")``; raises ``ValueError`` for anything else."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url!r}")
    return bucket, key


def client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client for ``endpoint_url`` / ``region``, created once per process and reused."""
    key = (endpoint_url or None, region or None)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            try:
                import boto3
            except ImportError:
                raise MissingExtraError("boto3", "s3", "reading s3:// URLs") from None
            kwargs: dict[str, Any] = {}
            if endpoint_url:
                kwargs["endpoint_url"] = endpoint_url
            if region:
                kwargs["region_name"] = region
            found = boto3.session.Session().client("s3", **kwargs)
            _clients[key] = found
    return found


class _RangedObject(io.RawIOBase):
    """A raw stream over bytes ``[start, end)`` of an object, one ranged GET (re-opened after a dropped connection)."""

    def __init__(self, s3: Any, bucket: str, key: str, start: int, end: int | None) -> None:
        super().__init__()
        self._s3 = s3
        self._bucket = bucket
        self._key = key
        self._pos = start
        self._end = end
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def _open(self) -> Any:
        if self._end is not None:
            if self._end <= self._pos:
                return None
            rng = f"bytes={self._pos}-{self._end - 1}"
        else:
            rng = f"bytes={self._pos}-"
        try:
            resp = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=rng)
        except Exception as exc:
            # Asking for bytes past the end of an object (an empty object) is a 416.
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("InvalidRange", "416"):
                return None
            raise
        return resp["Body"]

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        if self._end is not None:
            size = min(size, self._end - self._pos)
        if size <= 0:
            return 0

        def attempt() -> Any:
            try:
                if self._body is None:
                    self._body = self._open()
                    if self._body is None:
                        return None
                return self._body.read(size)
            except Exception:
                self._close_body()  # a broken stream: the next attempt opens a ranged GET from here
                raise

        try:
            data = retry_call(attempt, policy=_READ_RETRY, what=f"reading s3://{self._bucket}/{self._key}",
                              retryable=lambda exc: not isinstance(exc, MissingExtraError))
        except RetriesExhausted as exc:
            raise exc.last from None
        if data is None:
            return 0
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self._pos += n
        return n

    def _close_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # pragma: no cover - best effort
                pass
            self._body = None

    def close(self) -> None:
        self._close_body()
        super().close()


def open_read(
    url: str,
    start: int = 0,
    end: int | None = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    buffer_size: int = 1 << 20,
) -> io.BufferedReader:
    """A binary stream over bytes ``[start, end)`` of the object (``end=None``: to its end), by ranged GET.

    ``tell()`` gives absolute offsets in the object. The GET is sent on the first read.
    """
    bucket, key = parse_url(url)
    raw = _RangedObject(client(endpoint_url, region), bucket, key, start, end)
    return io.BufferedReader(raw, buffer_size)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching keys like a path glob (``*``/``?`` within a part, ``**`` across parts)."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) or pattern.startswith("[^", i) else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def list_objects(
    url_glob: str, *, endpoint_url: str | None = None, region: str | None = None
) -> list[tuple[str, int]]:
    """``(url, size)`` of every object matching ``url_glob`` (an exact URL matches itself), sorted by URL."""
    bucket, key_glob = parse_url(url_glob)
    m = _MAGIC.search(key_glob)
    prefix = key_glob[: m.start()] if m else key_glob
    regex = glob_regex(key_glob)
    s3 = client(endpoint_url, region)
    found: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            key = obj["Key"]
            if not key.endswith("/") and regex.match(key):
                found.append((f"s3://{bucket}/{key}", int(obj["Size"])))
    found.sort()
    return found


def size(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> int:
    """The object's size in bytes."""
    bucket, key = parse_url(url)
    return int(client(endpoint_url, region).head_object(Bucket=bucket, Key=key)["ContentLength"])


def upload(path: str, url: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Upload the local file ``path`` as the object ``url`` (multipart for big files)."""
    bucket, key = parse_url(url)
    client(endpoint_url, region).upload_file(path, bucket, key)


def download(url: str, path: str, *, endpoint_url: str | None = None, region: str | None = None) -> bool:
    """Download ``url`` to the local file ``path``; False (and nothing written) when the object does not exist."""
    bucket, key = parse_url(url)
    s3 = client(endpoint_url, region)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    s3.download_file(bucket, key, path)
    return True


def delete(urls: list[str], *, endpoint_url: str | None = None, region: str | None = None) -> None:
    """Delete the objects ``urls`` (missing ones are ignored)."""
    s3 = client(endpoint_url, region)
    for url in urls:
        bucket, key = parse_url(url)
        s3.delete_object(Bucket=bucket, Key=key)
