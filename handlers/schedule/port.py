"""The execution port the schedule store runs on: run one statement, run a block as one
write transaction, say the dialect.

:class:`SchedulePort` is all the store (:class:`active_data_flow.handlers.schedule.policy.PortScheduleStore`)
needs of a database. Its implementations:

* :class:`ExecPort` over any :class:`ExecConnection` — an object with ``execute(sql,
  params) -> rows``: the standard library's sqlite3
  (:class:`active_data_flow.handlers.schedule.sqlite_exec.Sqlite3Exec`) and Spin SQLite inside a component
  (``active_data_flow.spin_app.connectors.SpinSqliteExec``);
* :class:`active_data_flow.handlers.schedule.sql.SqlAlchemyPort` on a SQLAlchemy engine (SQLite and
  PostgreSQL), which is left out of components.

Statements use ``?`` placeholders; a port whose driver wants others converts them.

Standard library only (this runs inside a Spin component).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from active_data_flow.handlers.schedule.dialects import SQLITE, Dialect

__all__ = ["ExecConnection", "ExecPort", "SchedulePort"]


class ExecConnection(Protocol):
    """Run one statement, get its rows (an empty list when none)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Sequence[Sequence[Any]]: ...


class SchedulePort(ExecConnection, Protocol):
    """What the schedule store needs of a database.

    ``execute`` outside :meth:`transaction` runs the statement on its own (the store reads
    so); inside, on the transaction's connection. ``transaction()`` is one write
    transaction: committed when the block ends, rolled back when it raises; a transaction
    begun inside another joins it. A port may be shared by threads: each thread's
    transaction is its own."""

    dialect: Dialect

    def transaction(self) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...


class ExecPort:
    """:class:`SchedulePort` over one :class:`ExecConnection` in autocommit mode (so the
    transaction statements are the port's own: ``dialect.begin``, ``COMMIT``, ``ROLLBACK``).

    One connection, guarded by a lock: threads sharing the port take turns, statement by
    statement and transaction by transaction."""

    def __init__(self, conn: ExecConnection, dialect: Dialect = SQLITE) -> None:
        self.conn = conn
        self.dialect = dialect
        self._lock = threading.RLock()
        self._depth = 0

    def __repr__(self) -> str:
        return f"ExecPort({self.conn!r}, {self.dialect.name})"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        with self._lock:
            return list(self.conn.execute(sql, list(params)))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.conn.execute(self.dialect.begin, [])
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK", [])
                raise
            self._depth = 0
            self.conn.execute("COMMIT", [])

    def close(self) -> None:
        close = getattr(self.conn, "close", None)
        if close is not None:
            close()
