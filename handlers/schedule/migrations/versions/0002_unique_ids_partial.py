"""Ids never reused on SQLite (AUTOINCREMENT), and the run status ``partial``.

SQLite hands out the highest rowid + 1, so after the newest run (or flow) was deleted the
next one got its id again — and with it the old run's engine run id. An ``AUTOINCREMENT``
table takes ids from ``sqlite_sequence``, which only grows. SQLite cannot add that to a
table, so ``data_flows`` and ``data_flow_runs`` are rebuilt: same columns, constraints and
indexes, every row and id kept (runs whose flow is gone — only possible in a file once
written without foreign keys, and invisible to the store — are left behind). Ids deleted
before the upgrade above the highest remaining one are not known and may be handed out
once more; from then on none is.

PostgreSQL takes ids from sequences, which never go back: only the status constraint changes.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

OLD_STATUSES = ("pending", "in_progress", "success", "failed", "cancelled")
NEW_STATUSES = ("pending", "in_progress", "success", "partial", "failed", "cancelled")
ACTIVE = "status IN ('pending', 'in_progress')"

FLOW_COLUMNS = (
    "id", "name", "description", "enabled", "configuration", "run_interval", "last_run_at", "last_run_status",
    "next_run_at", "created_at", "updated_at",
)
RUN_COLUMNS = (
    "id", "flow_id", "status", "trigger", "attempt", "created_at", "started_at", "ended_at", "error_message",
    "error_backtrace", "records_in", "records_out", "dead_letters", "worker_id", "lease_expires_at",
    "engine_run_id", "not_before",
)
#: The rebuilt tables are created under these names, filled, then renamed over the old ones.
NEW_FLOWS, NEW_RUNS = "_adf_new_data_flows", "_adf_new_data_flow_runs"


def _status_check(statuses: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_tables(statuses: tuple[str, ...], autoincrement: bool) -> None:
    """The two tables as 0001 made them on SQLite, under the NEW_* names (``autoincrement``:
    ids from ``sqlite_sequence``) and with ``statuses`` allowed."""
    op.create_table(
        NEW_FLOWS,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("configuration", sa.JSON(), nullable=False),
        sa.Column("run_interval", sa.Integer(), nullable=False),
        _ts("last_run_at"),
        sa.Column("last_run_status", sa.String(20), nullable=True),
        _ts("next_run_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("name", name="uq_data_flows_name"),
        sa.CheckConstraint("run_interval > 0", name="ck_data_flows_run_interval_positive"),
        sqlite_autoincrement=autoincrement,
    )
    op.create_table(
        NEW_RUNS,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "flow_id", sa.Integer(),
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
        sa.CheckConstraint(_status_check(statuses), name="ck_data_flow_runs_status"),
        sa.CheckConstraint("attempt >= 1", name="ck_data_flow_runs_attempt"),
        sqlite_autoincrement=autoincrement,
    )


def _create_indexes() -> None:
    op.create_index("ix_data_flows_due", "data_flows", ["enabled", "next_run_at"])
    op.create_index("ix_data_flow_runs_status_created", "data_flow_runs", ["status", "created_at"])
    op.create_index("ix_data_flow_runs_flow_created", "data_flow_runs", ["flow_id", "created_at"])
    op.create_index("ix_data_flow_runs_status_lease", "data_flow_runs", ["status", "lease_expires_at"])
    op.create_index("ix_data_flow_runs_active_flow", "data_flow_runs", ["flow_id"], sqlite_where=sa.text(ACTIVE))


def _rebuild_sqlite(statuses: tuple[str, ...], autoincrement: bool, status_sql: str = "status") -> None:
    """Copy both tables into new definitions and put them in place of the old ones.

    The order matters: with foreign keys on (as the store connects), dropping ``data_flows``
    deletes its rows first and so cascades to every table that references it. So the new
    runs table references the new flows table, the old runs table goes first, and renaming
    the new flows table to ``data_flows`` rewrites the reference (SQLite >= 3.26).
    """
    bind = op.get_bind()
    _create_tables(statuses, autoincrement)
    # A file whose tables were already AUTOINCREMENT (made by the plain sqlite3 store) keeps
    # its counters even where they are above the highest remaining id.
    counters: dict[str, int] = {}
    if bind.execute(sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")).first():
        counters = {
            str(name): int(seq)
            for name, seq in bind.execute(
                sa.text("SELECT name, seq FROM sqlite_sequence WHERE name IN ('data_flows', 'data_flow_runs')")
            ).all()
        }
    flows = ", ".join(FLOW_COLUMNS)
    runs = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
    selected = ", ".join(status_sql if c == "status" else f'"{c}"' for c in RUN_COLUMNS)
    op.execute(f"INSERT INTO {NEW_FLOWS} ({flows}) SELECT {flows} FROM data_flows")
    op.execute(
        f"INSERT INTO {NEW_RUNS} ({runs}) SELECT {selected} FROM data_flow_runs "
        "WHERE flow_id IN (SELECT id FROM data_flows)"
    )
    op.drop_table("data_flow_runs")
    op.drop_table("data_flows")
    op.rename_table(NEW_FLOWS, "data_flows")
    op.rename_table(NEW_RUNS, "data_flow_runs")
    _create_indexes()
    if autoincrement:
        for table, seq in counters.items():
            op.execute(sa.text("UPDATE sqlite_sequence SET seq = :seq WHERE name = :t AND seq < :seq").bindparams(seq=seq, t=table))
            op.execute(
                sa.text(
                    "INSERT INTO sqlite_sequence (name, seq) SELECT :t, :seq "
                    "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = :t)"
                ).bindparams(seq=seq, t=table)
            )


def _replace_status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint("ck_data_flow_runs_status", "data_flow_runs", type_="check")
    op.create_check_constraint("ck_data_flow_runs_status", "data_flow_runs", _status_check(statuses))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(NEW_STATUSES, autoincrement=True)
    else:
        _replace_status_check(NEW_STATUSES)


def downgrade() -> None:
    # Before 0002 a run with dead letters below the limit was recorded as a success.
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(OLD_STATUSES, autoincrement=False, status_sql="CASE status WHEN 'partial' THEN 'success' ELSE status END")
    else:
        op.execute("UPDATE data_flow_runs SET status = 'success' WHERE status = 'partial'")
        _replace_status_check(OLD_STATUSES)
    op.execute("UPDATE data_flows SET last_run_status = 'success' WHERE last_run_status = 'partial'")
