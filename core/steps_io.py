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
  the start of the body). Connections are kept alive per scheme, host and port for the
  reader's whole run and closed when the step closes (see :class:`~active_data_flow.http_client.ConnectionPool`).

``sql``::

    {type: sql, url: "sqlite:///lookup.db", query: "select tier from customers where id = :id",
     params: {id: "${record.customer_id}"}, into: customer, one: true}

  One parameterised statement per record (never formatted into the SQL). A query's rows go
  under ``into`` (a list of objects; ``one: true``: the first row or null; ``merge: true``:
  the first row's columns merged into the record); a statement without rows sets
  ``into`` to ``{"rowcount": n}``. ``sqlite:///`` URLs use the standard library (one
  connection per reader, in autocommit mode); other URLs SQLAlchemy (the ``sql`` extra: one
  engine per reader, its pool sized for ``concurrency``, each statement its own transaction —
  in AUTOCOMMIT mode on PostgreSQL, MySQL/MariaDB, SQL Server, Oracle and SQLite).

Both take ``concurrency: N`` (1 to 64, default 1): up to N records of a batch are in flight
at once, on N threads of the reader. The records come out in their input order, each failing
record is dead-lettered (in input order) exactly as with ``concurrency: 1``, and retries
happen per record. On a ``sqlite:///`` URL the statements still run one at a time (one
connection, and SQLite serialises writers anyway).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from active_data_flow.attributes import Attribute
from active_data_flow.errors import AdfError, ConfigError
from active_data_flow.http_client import ConnectionPool, HttpClient, HttpNetworkError
from active_data_flow.record import Record
from active_data_flow.refs import resolve
from active_data_flow.step import ErrorHandler, Step

__all__ = ["HttpStep", "HttpStepError", "SqlStep"]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: SQLAlchemy dialects whose AUTOCOMMIT isolation level the sql step uses
_AUTOCOMMIT_BACKENDS = frozenset({"postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle"})
#: the most records a step may have in flight at once
MAX_CONCURRENCY = 64


def _check_concurrency(value: Any) -> str | None:
    return None if 1 <= value <= MAX_CONCURRENCY else f"must be from 1 to {MAX_CONCURRENCY}, got {value}"


_CONCURRENCY = Attribute("concurrency", int, default=1, check=_check_concurrency,
                         help=f"records of a batch in flight at once (1-{MAX_CONCURRENCY}); the output keeps the input order")


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


def _outcome(work: Callable[[Record], Record | None], record: Record) -> tuple[bool, Any]:
    try:
        return True, work(record)
    except Exception as exc:
        return False, exc


class _PerRecordStep(Step):
    """A step doing one piece of I/O per record, up to ``concurrency`` records at once."""

    _executor: ThreadPoolExecutor | None = None

    def open(self) -> None:
        workers = int(self.option("concurrency"))
        if workers > 1 and self._executor is None:
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"adf-{self.type_name}")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _each(self, records: list[Record], work: Callable[[Record], Record | None],
              on_error: ErrorHandler) -> list[Record]:
        """``work`` applied to every record, at most ``concurrency`` at once: the results in
        input order (``None``: the record is passed on as it is), and every failure reported
        through ``on_error`` in input order, from the calling thread."""
        executor = self._executor
        if executor is None or len(records) < 2:
            outcomes = [_outcome(work, record) for record in records]
        else:
            futures: list[Future[tuple[bool, Any]]] = [executor.submit(_outcome, work, r) for r in records]
            try:
                outcomes = [f.result() for f in futures]
            finally:  # interrupted: send nothing more
                for future in futures:
                    future.cancel()
        out: list[Record] = []
        for record, (ok, value) in zip(records, outcomes, strict=True):
            if ok:
                out.append(record if value is None else value)
            else:
                on_error(record, value, self.name)
        return out


class HttpStep(_PerRecordStep):
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
        _CONCURRENCY,
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
        self._client: HttpClient | None = None
        self._client_lock = threading.Lock()

    def open(self) -> None:
        super().open()
        self._http_client()

    def _http_client(self) -> HttpClient:
        """The reader's client: its kept-alive connections are reused by every request."""
        with self._client_lock:
            if self._client is None:
                timeout = float(self.option("timeout_s"))
                self._client = HttpClient(
                    what=f"step {self.name!r}", headers={}, auth=None, timeout=timeout,
                    retries=max(0, int(self.option("retries"))), backoff=float(self.option("retry_backoff_s")),
                    max_backoff=30.0, pool=ConnectionPool(timeout, max_idle=MAX_CONCURRENCY),
                )
            return self._client

    def close(self) -> None:
        super().close()
        with self._client_lock:
            if self._client is not None and self._client.pool is not None:
                self._client.pool.close()
            self._client = None

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
        client = self._http_client()
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
        if self._executor is None and int(self.option("concurrency")) > 1:
            self.open()
        context = _context(self)
        return self._each(records, lambda record: _place(self, record, self._request(record, context)), on_error)


class SqlStep(_PerRecordStep):
    type_name = "sql"
    attributes = (
        Attribute("url", str, required=True, secret=True, help="sqlite:///path or a SQLAlchemy URL"),
        Attribute("query", str, required=True, help="one parameterised statement (:name placeholders)"),
        Attribute("params", dict, default=None, help="statement parameters; ${record.x} resolved per record"),
        Attribute("into", str, default="sql", help="field the rows go to (null: drop them)"),
        Attribute("one", bool, default=False, help="the first row (or null) instead of a list"),
        Attribute("merge", bool, default=False, help="merge the first row's columns into the record"),
        _CONCURRENCY,
        Attribute("name", str),
    )

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.name = self.option("name") or "sql"
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._engine: Any = None
        self._statement: Any = None
        self._autocommit = False

    def open(self) -> None:
        super().open()
        url = str(self.option("url"))
        if url.startswith("sqlite:///"):
            # one connection shared by the step's threads, one statement at a time (the lock)
            self._conn = sqlite3.connect(url[len("sqlite:///"):], timeout=30, isolation_level=None,
                                         check_same_thread=False)
        else:
            try:
                import sqlalchemy
            except ImportError as exc:
                from active_data_flow.errors import MissingExtraError

                raise MissingExtraError("SQLAlchemy", "sql", "the sql step with a non-SQLite URL") from exc
            options: dict[str, Any] = {}
            if not url.startswith("sqlite"):
                options.update(pool_size=int(self.option("concurrency")), max_overflow=0)
            # one statement in autocommit mode is its own transaction, without BEGIN/COMMIT round trips
            self._autocommit = sqlalchemy.engine.make_url(url).get_backend_name() in _AUTOCOMMIT_BACKENDS
            if self._autocommit:
                options["isolation_level"] = "AUTOCOMMIT"
            self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True, **options)
            self._statement = sqlalchemy.text(self.option("query"))

    def _run(self, params: Mapping[str, Any]) -> tuple[list[str] | None, list[tuple[Any, ...]], int]:
        if self._conn is not None:
            with self._conn_lock:
                cur = self._conn.execute(self.option("query"), dict(params))
                if cur.description is None:
                    return None, [], cur.rowcount
                return [d[0] for d in cur.description], [tuple(r) for r in cur.fetchall()], cur.rowcount
        with self._engine.connect() if self._autocommit else self._engine.begin() as conn:
            result = conn.execute(self._statement, dict(params))
            if not result.returns_rows:
                return None, [], int(result.rowcount)
            return list(result.keys()), [tuple(r) for r in result.fetchall()], int(result.rowcount)

    def _lookup(self, record: Record, context: Mapping[str, Any]) -> Record | None:
        """The record with its statement's result placed (None: unchanged, a ``merge`` without rows)."""
        columns, rows, rowcount = self._run(resolve(self.option("params") or {}, context, record))
        if columns is None:
            value: Any = {"rowcount": rowcount}
        else:
            objects = [dict(zip(columns, row, strict=True)) for row in rows]
            value = (objects[0] if objects else None) if (self.option("one") or self.option("merge")) else objects
        if self.option("merge") and value is None:
            return None
        return _place(self, record, value)

    def process_batch(self, records: list[Record], on_error: ErrorHandler) -> list[Record]:
        if self._conn is None and self._engine is None:
            self.open()
        context = _context(self)
        return self._each(records, lambda record: self._lookup(record, context), on_error)

    def close(self) -> None:
        super().close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
