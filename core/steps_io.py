"""Steps that talk to other systems per record: ``http`` and ``sql``.

With ``wasm`` steps between them, a flow does what multi-step scheduled jobs do: fetch from
an API, look up or write rows, run business logic in a sandbox.

``http``::

    {type: http, method: POST, url: "https://api.example.com/orders/${record.id}",
     headers: {Authorization: "Bearer ${context.token}"}, body: {status: "${record.status}"},
     into: api, expect: [200, 201], retries: 2, timeout_s: 10}

  One request per record; ``${record.x}`` / ``${context.x}`` resolved in ``url``, ``headers``
  and ``body`` (a mapping or list is sent as JSON). The answer — parsed JSON, else text — is put
  under ``into`` (default ``http``; ``into: null`` drops it, ``merge: true`` merges a JSON object
  into the record). 408, 429, 5xx and network errors are retried with backoff by the connectors'
  client (:mod:`active_data_flow.http_client`: ``Retry-After`` honoured, capped at 30
  s); any other status outside ``expect`` fails the record (dead letter with the status and
  the start of the body).

``sql``::

    {type: sql, url: "sqlite:///lookup.db", query: "select tier from customers where id = :id",
     params: {id: "${record.customer_id}"}, into: customer, one: true}

  One parameterised statement per record (never formatted into the SQL). A query's rows go
  under ``into`` (a list of objects; ``one: true``: the first row or null; ``merge: true``:
  the first row's columns merged into the record); a statement without rows sets
  ``into`` to ``{"rowcount": n}``. ``sqlite:///`` URLs use the standard library; other URLs
  SQLAlchemy (the ``sql`` extra).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.http_client import HttpClient, HttpNetworkError
from active_data_flow.record import Record
from active_data_flow.refs import resolve
from active_data_flow.step import ErrorHandler, Step

__all__ = ["HttpStep", "HttpStepError", "SqlStep"]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class HttpStepError(AdfError):
    """A request that failed for good (status outside ``expect``, or retries exhausted)."""


def _context(step: Step) -> dict[str, Any]:
    extras = getattr(step.run_context, "extras", None)
    return extras.setdefault("context", {}) if extras is not None else {}


def _place(step: Step, record: Record, value: Any) -> Record:
    if step.option("merge"):
        if not isinstance(value, Mapping):
            raise AdfError(f"step {step.name!r}: merge needs an object, got {type(value).__name__}")
        return {**record, **value}
    into = step.option("into")
    if not into:
        return record
    return {**record, str(into): value}


class HttpStep(Step):
    type_name = "http"
    attributes = (
        Attribute("url", str, required=True),
        Attribute("method", str, default="GET", choices=_METHODS),
        Attribute("headers", dict, default=None, secret=True, help="request headers (values may hold secrets)"),
        Attribute("body", object, default=None, help="a mapping/list (sent as JSON) or text"),
        Attribute("into", str, default="http", help="field the answer goes to (null: drop the answer)"),
        Attribute("merge", bool, default=False, help="merge a JSON object answer into the record"),
        Attribute("expect", list, default=None, help="accepted statuses (default: 200-299)"),
        Attribute("retries", int, default=2),
        Attribute("retry_backoff_s", float, default=0.5),
        Attribute("timeout_s", float, default=10.0),
        Attribute("name", str),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        url = str(self.option("url"))
        if not url.startswith(("http://", "https://", "${")):
            raise ConfigError(f"step {self.option('name') or 'http'!r}", [f"url {url!r} must be http:// or https://"])
        expect = self.option("expect")
        if expect is not None and not all(isinstance(s, int) for s in expect):
            raise ConfigError(f"step {self.option('name') or 'http'!r}", ["expect must be a list of status codes"])
        self.name = self.option("name") or f"http:{self.option('method')} {url}"

    def _request(self, record: Record, context: Mapping[str, Any]) -> Any:
        url = str(resolve(self.option("url"), context, record))
        headers = {str(k): str(v) for k, v in resolve(self.option("headers") or {}, context, record).items()}
        body = resolve(self.option("body"), context, record)
        data: bytes | None = None
        if body is not None:
            if isinstance(body, (Mapping, list)):
                data = json.dumps(body, default=str).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                data = str(body).encode()
        expect = self.option("expect")
        method = self.option("method")
        client = HttpClient(
            what=f"step {self.name!r}", headers={}, auth=None, timeout=float(self.option("timeout_s")),
            retries=max(0, int(self.option("retries"))), backoff=float(self.option("retry_backoff_s")), max_backoff=30.0,
        )
        try:
            answer = client.send(method, url, data, headers)
        except HttpNetworkError as exc:
            raise HttpStepError(f"{method} {url}: {exc}") from exc
        status, raw = answer.status, answer.body
        ok = status in expect if expect else 200 <= status < 300
        if ok:
            text = raw.decode("utf-8", "replace")
            try:
                return json.loads(text) if text.strip() else None
            except ValueError:
                return text
        snippet = raw[:300].decode("utf-8", "replace")
        raise HttpStepError(f"{method} {url} answered {status}: {snippet}")

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        context = _context(self)
        out: list[Record] = []
        for record in records:
            try:
                out.append(_place(self, record, self._request(record, context)))
            except Exception as exc:
                on_error(record, exc, self.name)
        return out


class SqlStep(Step):
    type_name = "sql"
    attributes = (
        Attribute("url", str, required=True, secret=True, help="sqlite:///path or a SQLAlchemy URL"),
        Attribute("query", str, required=True, help="one parameterised statement (:name placeholders)"),
        Attribute("params", dict, default=None, help="statement parameters; ${record.x} resolved per record"),
        Attribute("into", str, default="sql", help="field the rows go to (null: drop them)"),
        Attribute("one", bool, default=False, help="the first row (or null) instead of a list"),
        Attribute("merge", bool, default=False, help="merge the first row's columns into the record"),
        Attribute("name", str),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.name = self.option("name") or "sql"
        self._conn: Any = None
        self._engine: Any = None

    def open(self) -> None:
        url = str(self.option("url"))
        if url.startswith("sqlite:///"):
            self._conn = sqlite3.connect(url[len("sqlite:///"):], timeout=30, isolation_level=None)
        else:
            try:
                import sqlalchemy
            except ImportError as exc:
                from active_data_flow.errors import MissingExtraError

                raise MissingExtraError("SQLAlchemy", "sql", "the sql step with a non-SQLite URL") from exc
            self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True)

    def _run(self, params: Mapping[str, Any]) -> tuple[list[str] | None, list[tuple[Any, ...]], int]:
        if self._conn is not None:
            cur = self._conn.execute(self.option("query"), dict(params))
            if cur.description is None:
                return None, [], cur.rowcount
            return [d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()], cur.rowcount
        import sqlalchemy

        with self._engine.begin() as conn:
            result = conn.execute(sqlalchemy.text(self.option("query")), dict(params))
            if not result.returns_rows:
                return None, [], int(result.rowcount)
            return list(result.keys()), [tuple(r) for r in result.fetchall()], int(result.rowcount)

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        if self._conn is None and self._engine is None:
            self.open()
        context = _context(self)
        out: list[Record] = []
        for record in records:
            try:
                columns, rows, rowcount = self._run(resolve(self.option("params") or {}, context, record))
                if columns is None:
                    value: Any = {"rowcount": rowcount}
                else:
                    objects = [dict(zip(columns, row, strict=True)) for row in rows]
                    value = (objects[0] if objects else None) if (self.option("one") or self.option("merge")) \
                        else objects
                if self.option("merge") and value is None:
                    out.append(record)
                    continue
                out.append(_place(self, record, value))
            except Exception as exc:
                on_error(record, exc, self.name)
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
