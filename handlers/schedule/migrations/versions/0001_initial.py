"""The schedule tables: data_flows, data_flow_runs, heartbeat_requests.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

RUN_STATUSES = ("pending", "in_progress", "success", "failed", "cancelled")
ACTIVE = "status IN ('pending', 'in_progress')"


def _ts(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _big_id() -> sa.Column[Any]:
    # BIGINT identity on PostgreSQL; SQLite needs INTEGER PRIMARY KEY for its rowid alias.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "data_flows",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("configuration", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("run_interval", sa.Integer(), nullable=False),
        _ts("last_run_at"),
        sa.Column("last_run_status", sa.String(20), nullable=True),
        _ts("next_run_at"),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("name", name="uq_data_flows_name"),
        sa.CheckConstraint("run_interval > 0", name="ck_data_flows_run_interval_positive"),
    )
    op.create_index("ix_data_flows_due", "data_flows", ["enabled", "next_run_at"])

    op.create_table(
        "data_flow_runs",
        _big_id(),
        sa.Column(
            "flow_id", sa.Integer(), sa.ForeignKey("data_flows.id", ondelete="CASCADE", name="fk_data_flow_runs_flow"),
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
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in RUN_STATUSES) + ")", name="ck_data_flow_runs_status"
        ),
        sa.CheckConstraint("attempt >= 1", name="ck_data_flow_runs_attempt"),
    )
    op.create_index("ix_data_flow_runs_status_created", "data_flow_runs", ["status", "created_at"])
    op.create_index("ix_data_flow_runs_flow_created", "data_flow_runs", ["flow_id", "created_at"])
    op.create_index("ix_data_flow_runs_status_lease", "data_flow_runs", ["status", "lease_expires_at"])
    # The heartbeat's "is a run of this flow still going?" check reads only active runs.
    op.create_index(
        "ix_data_flow_runs_active_flow", "data_flow_runs", ["flow_id"],
        postgresql_where=sa.text(ACTIVE), sqlite_where=sa.text(ACTIVE),
    )

    op.create_table(
        "heartbeat_requests",
        _big_id(),
        _ts("ts", nullable=False),
        sa.Column("client", sa.String(200), nullable=True),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("flows_due", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("flows_triggered", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_heartbeat_requests_ts", "heartbeat_requests", ["ts"])


def downgrade() -> None:
    op.drop_table("heartbeat_requests")
    op.drop_index("ix_data_flow_runs_active_flow", table_name="data_flow_runs")
    op.drop_table("data_flow_runs")
    op.drop_index("ix_data_flows_due", table_name="data_flows")
    op.drop_table("data_flows")
