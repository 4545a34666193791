"""Cron schedules: ``data_flows.schedule_cron`` and ``schedule_timezone``; ``run_interval``
becomes optional (a flow has exactly one of the two, ``ck_data_flows_one_schedule``).

PostgreSQL alters the table in place. SQLite cannot drop a NOT NULL or add a CHECK, so
``data_flows`` and ``data_flow_runs`` are rebuilt as in ``0002``: same ids, rows, counters
and indexes (the runs table goes too, because dropping ``data_flows`` with foreign keys on
would cascade to it).

Downgrading refuses while cron flows exist: they have no interval to go back to.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

STATUSES = "status IN ('pending', 'in_progress', 'success', 'partial', 'failed', 'cancelled')"
ACTIVE = "status IN ('pending', 'in_progress')"
ONE_SCHEDULE = "(run_interval IS NULL) <> (schedule_cron IS NULL)"
OLD_FLOW_COLUMNS = (
    "id",
    "name",
    "description",
    "enabled",
    "configuration",
    "run_interval",
    "last_run_at",
    "last_run_status",
    "next_run_at",
    "created_at",
    "updated_at",
)
NEW_FLOW_COLUMNS = (*OLD_FLOW_COLUMNS, "schedule_cron", "schedule_timezone")
RUN_COLUMNS = (
    "id",
    "flow_id",
    "status",
    "trigger",
    "attempt",
    "created_at",
    "started_at",
    "ended_at",
    "error_message",
    "error_backtrace",
    "records_in",
    "records_out",
    "dead_letters",
    "worker_id",
    "lease_expires_at",
    "engine_run_id",
    "not_before",
)
NEW_FLOWS, NEW_RUNS = "_adf_new_data_flows", "_adf_new_data_flow_runs"


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_tables(cron: bool) -> None:
    """The two tables on SQLite under the NEW_* names: with the cron schedule (``cron``) or as 0002 left them."""
    flow_extra: list[Any] = (
        [
            sa.Column("schedule_cron", sa.String(200), nullable=True),
            sa.Column("schedule_timezone", sa.String(64), nullable=True),
            sa.CheckConstraint(ONE_SCHEDULE, name="ck_data_flows_one_schedule"),
        ]
        if cron
        else []
    )
    op.create_table(
        NEW_FLOWS,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("configuration", sa.JSON(), nullable=False),
        sa.Column("run_interval", sa.Integer(), nullable=cron),
        _ts("last_run_at"),
        sa.Column("last_run_status", sa.String(20), nullable=True),
        _ts("next_run_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        *flow_extra,
        sa.UniqueConstraint("name", name="uq_data_flows_name"),
        sa.CheckConstraint("run_interval > 0", name="ck_data_flows_run_interval_positive"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        NEW_RUNS,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "flow_id",
            sa.Integer(),
            sa.ForeignKey(f"{NEW_FLOWS}.id", ondelete="CASCADE", name="fk_data_flow_runs_flow"),
            nullable=False,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("ended_at"),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_backtrace", sa.Text(), nullable=True),
        sa.Column("records_in", sa.BigInteger(), nullable=True),
        sa.Column("records_out", sa.BigInteger(), nullable=True),
        sa.Column("dead_letters", sa.BigInteger(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        _ts("lease_expires_at"),
        sa.Column("engine_run_id", sa.String(200), nullable=True),
        _ts("not_before"),
        sa.CheckConstraint(STATUSES, name="ck_data_flow_runs_status"),
        sa.CheckConstraint("attempt >= 1", name="ck_data_flow_runs_attempt"),
        sqlite_autoincrement=True,
    )


def _create_indexes() -> None:
    op.create_index("ix_data_flows_due", "data_flows", ["enabled", "next_run_at"])
    op.create_index("ix_data_flow_runs_status_created", "data_flow_runs", ["status", "created_at"])
    op.create_index("ix_data_flow_runs_flow_created", "data_flow_runs", ["flow_id", "created_at"])
    op.create_index("ix_data_flow_runs_status_lease", "data_flow_runs", ["status", "lease_expires_at"])
    op.create_index(
        "ix_data_flow_runs_active_flow", "data_flow_runs", ["flow_id"], sqlite_where=sa.text(ACTIVE)
    )


def _rebuild_sqlite(cron: bool) -> None:
    """Copy both tables into new definitions and put them in place of the old ones (the order
    as in 0002: new runs reference new flows, old runs dropped first)."""
    bind = op.get_bind()
    _create_tables(cron)
    counters = {
        str(name): int(seq)
        for name, seq in bind.execute(
            sa.text("SELECT name, seq FROM sqlite_sequence WHERE name IN ('data_flows', 'data_flow_runs')")
        ).all()
    }
    flows = ", ".join(OLD_FLOW_COLUMNS)
    runs = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
    op.execute(f"INSERT INTO {NEW_FLOWS} ({flows}) SELECT {flows} FROM data_flows")
    op.execute(f"INSERT INTO {NEW_RUNS} ({runs}) SELECT {runs} FROM data_flow_runs")
    op.drop_table("data_flow_runs")
    op.drop_table("data_flows")
    op.rename_table(NEW_FLOWS, "data_flows")
    op.rename_table(NEW_RUNS, "data_flow_runs")
    _create_indexes()
    for table, seq in counters.items():
        op.execute(
            sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :t AND seq < :seq").bindparams(
                seq=seq, t=table
            )
        )
        op.execute(
            sa.text(
                "INSERT INTO sqlite_sequence (name, seq) SELECT :t, :seq "
                "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = :t)"
            ).bindparams(seq=seq, t=table)
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(cron=True)
        return
    op.alter_column("data_flows", "run_interval", existing_type=sa.Integer(), nullable=True)
    op.add_column("data_flows", sa.Column("schedule_cron", sa.String(200), nullable=True))
    op.add_column("data_flows", sa.Column("schedule_timezone", sa.String(64), nullable=True))
    op.create_check_constraint("ck_data_flows_one_schedule", "data_flows", ONE_SCHEDULE)


def downgrade() -> None:
    bind = op.get_bind()
    count = bind.execute(sa.text("SELECT count(*) FROM data_flows WHERE schedule_cron IS NOT NULL")).scalar()
    if count:
        raise RuntimeError(
            f"{count} flow(s) run on a cron schedule: give each a run_interval (or delete it) before downgrading"
        )
    if bind.dialect.name == "sqlite":
        _rebuild_sqlite(cron=False)
        return
    op.drop_constraint("ck_data_flows_one_schedule", "data_flows", type_="check")
    op.drop_column("data_flows", "schedule_timezone")
    op.drop_column("data_flows", "schedule_cron")
    op.alter_column("data_flows", "run_interval", existing_type=sa.Integer(), nullable=False)
