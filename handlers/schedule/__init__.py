"""The heartbeat schedule: flows with intervals, their runs, and the heartbeat request log.

:mod:`active_data_flow.handlers.schedule.store` is the interface (standard library only, so it runs inside
a Spin component). It is implemented once, by :mod:`active_data_flow.handlers.schedule.policy`, over an
execution port (:mod:`active_data_flow.handlers.schedule.port`: run a statement, run a write transaction,
say the dialect) with what differs between SQLite and PostgreSQL in
:mod:`active_data_flow.handlers.schedule.dialects`; the tables are declared once in
:mod:`active_data_flow.handlers.schedule.tables`. The stores are that one on a port each:
:mod:`active_data_flow.handlers.schedule.sql` on SQLAlchemy (SQLite and PostgreSQL, with Alembic migrations
in ``handlers/schedule/migrations``), :mod:`active_data_flow.handlers.schedule.sqlite_exec` on a bare SQLite
``execute`` (standard library sqlite3, or Spin SQLite inside a component), which upgrades
its own tables. :mod:`active_data_flow.handlers.schedule.leases` keeps the leases of running runs and
retries their writes through a dropped connection.
"""
