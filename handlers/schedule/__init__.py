"""The heartbeat schedule: flows with intervals, their runs, and the heartbeat request log.

:mod:`handlers.schedule.store` is the interface (standard library only, so it runs inside
a Spin component). It is implemented once, by :mod:`handlers.schedule.policy`, over an
execution port (:mod:`handlers.schedule.port`: run a statement, run a write transaction,
say the dialect) with what differs between SQLite and PostgreSQL in
:mod:`handlers.schedule.dialects`; the tables are declared once in
:mod:`handlers.schedule.tables`. The stores are that one on a port each:
:mod:`handlers.schedule.sql` on SQLAlchemy (SQLite and PostgreSQL, with Alembic migrations
in ``handlers/schedule/migrations``), :mod:`handlers.schedule.sqlite_exec` on a bare SQLite
``execute`` (standard library sqlite3, or Spin SQLite inside a component), which upgrades
its own tables. :mod:`handlers.schedule.leases` keeps the leases of running runs and
retries their writes through a dropped connection.
"""
