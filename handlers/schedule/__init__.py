"""The heartbeat schedule: flows with intervals, their runs, and the heartbeat request log.

:mod:`handlers.schedule.store` is the interface (standard library only, so it runs inside
a Spin component); :mod:`handlers.schedule.sql` implements it with SQLAlchemy on SQLite
and PostgreSQL, with Alembic migrations in ``handlers/schedule/migrations``;
:mod:`handlers.schedule.sqlite_exec` implements it on a bare SQLite ``execute`` (standard
library sqlite3, or Spin SQLite inside a component) and upgrades its own tables.
"""
