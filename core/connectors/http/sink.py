"""The ``http`` sink: records sent in batches, each request with a stable idempotency key.

A 4xx answer other than 401/403/408/429 refuses the request's records (:class:`HttpRejected`:
the engine isolates and dead-letters them); records the server already took are not sent again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from active_data_flow.attributes import Attribute, at_least_one
from active_data_flow.connectors.http.common import COMMON_ATTRIBUTES, answer_snippet, check_url, make_client
from active_data_flow.errors import ConfigError, RecordValidationError, SinkUnavailableError
from active_data_flow.http_client import HttpNetworkError, is_retryable_status
from active_data_flow.record import Record
from active_data_flow.redact import redact_text
from active_data_flow.sink import Sink


class HttpSinkError(SinkUnavailableError):
    """The sink's server kept failing (5xx/429/network) after every retry: the run fails and can resume."""


class HttpAuthError(SinkUnavailableError):
    """401/403: the credentials are wrong, for every record alike; the run fails."""


class HttpRejected(RecordValidationError):
    """The server refused the records of a request (a 4xx other than 401/403/408/429).

    ``status`` and ``body`` are the answer's; the engine dead-letters each refused record
    with this message.
    """

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        self.field = "(request)"
        self.reason = f"{method} {url} answered {status}: {body}"
        Exception.__init__(self, self.reason)


_FORMATS = {"json_array": "application/json", "ndjson": "application/x-ndjson", "single": "application/json"}


def _check_method(value: Any) -> str | None:
    return None if str(value).upper() in ("POST", "PUT", "PATCH") else f"must be POST, PUT or PATCH, got {value!r}"


class HttpSink(Sink):
    """Sends records to an HTTP endpoint in batches (see the package doc)."""

    type_name = "http"
    attributes = (
        Attribute("url", str, required=True, check=check_url),
        Attribute("method", str, default="POST", check=_check_method),
        Attribute("batch_size", int, check=at_least_one,
                  help="records per request (default 100; 1 = one record per request)"),
        Attribute("format", str, default="json_array", choices=tuple(_FORMATS),
                  help="json_array, ndjson, or single (one JSON object per request)"),
        Attribute("idempotency_key_header", str, default="Idempotency-Key",
                  help="header carrying a stable key per request body ('' = none)"),
        *COMMON_ATTRIBUTES,
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.url: str = self.config["url"]
        self.method: str = str(self.config["method"]).upper()
        self.format: str = self.config["format"]
        size = self.config["batch_size"]
        if self.format == "single":
            if size is not None and size != 1:
                raise ConfigError("sink 'http'", [f"'batch_size' must be 1 with format 'single', got {size}"])
            size = 1
        self.batch_size: int = int(size or 100)
        self.client = make_client("sink 'http'", self.config, "application/json, */*;q=0.5")
        # Records of the last failed write_batch that the server already took (by identity):
        # the engine sends that batch again, or its records one by one, and those are skipped.
        self._failed: list[Record] = []
        self._failed_ids: set[int] = set()
        self._delivered: set[int] = set()

    def describe(self) -> str:
        return f"http {self.method} {redact_text(self.url)} ({self.format})"

    def encode(self, records: Sequence[Record]) -> bytes:
        def dumps(value: Any) -> bytes:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")

        if self.format == "ndjson":
            return b"".join(dumps(r) + b"\n" for r in records)
        if self.format == "single":
            return dumps(records[0])
        return dumps(list(records))

    def idempotency_key(self, body: bytes) -> str:
        """A stable key for ``body`` in this run: the same request retried carries the same key."""
        digest = hashlib.sha256()
        digest.update(self.run_context.run_id.encode())
        digest.update(b"\n")
        digest.update(body)
        return digest.hexdigest()

    def write_batch(self, records: Sequence[Record]) -> None:
        if not records:
            return
        if self._failed_ids and all(id(r) in self._failed_ids for r in records):
            todo = [r for r in records if id(r) not in self._delivered]
        else:
            self._failed, self._failed_ids, self._delivered = [], set(), set()
            todo = list(records)
        try:
            for chunk in _chunks(todo, self.batch_size):
                self._send(chunk)
                self._delivered.update(id(r) for r in chunk)
        except Exception:
            if not self._failed_ids:
                self._failed = list(records)
                self._failed_ids = {id(r) for r in records}
            raise

    def _send(self, chunk: Sequence[Record]) -> None:
        body = self.encode(chunk)
        headers = {"Content-Type": _FORMATS[self.format]}
        key_header = self.config["idempotency_key_header"]
        if key_header:
            headers[str(key_header)] = self.idempotency_key(body)
        shown = redact_text(self.url)
        try:
            resp = self.client.send(self.method, self.url, body, headers)
        except HttpNetworkError as exc:
            raise HttpSinkError(str(exc)) from None
        if 200 <= resp.status < 300:
            return
        snippet = answer_snippet(resp.body)
        if resp.status in (401, 403):
            raise HttpAuthError(f"{self.method} {shown} answered {resp.status} (check 'auth' and 'headers'): {snippet}")
        if is_retryable_status(resp.status):
            raise HttpSinkError(
                f"{self.method} {shown} answered {resp.status} after {resp.attempts} attempt(s): {snippet}"
            )
        raise HttpRejected(self.method, shown, resp.status, snippet)

    def close(self) -> None:
        self._failed, self._failed_ids, self._delivered = [], set(), set()


def _chunks(items: Sequence[Record], size: int) -> Iterable[Sequence[Record]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
