"""Queue control columns on tasks: queue, priority, result, cancel_requested, timeout,
schedule, and the terminal status 'cancelled'.

Expand-only: every new column has a default (or is nullable), so the previous release's
INSERTs and UPDATEs keep working against this schema. The status CHECK only widens.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('pending', 'processing', 'completed', 'failed')"
NEW_STATUSES = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"


def upgrade() -> None:
    op.add_column(
        "tasks", sa.Column("queue", sa.Text, nullable=False, server_default=sa.text("'default'"))
    )
    op.add_column(
        "tasks", sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("tasks", sa.Column("result", JSONB))
    op.add_column(
        "tasks",
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )
    # Seconds an attempt may run; the API fills in TASK_TIMEOUT, 900 matches its default.
    op.add_column(
        "tasks", sa.Column("timeout", sa.Integer, nullable=False, server_default=sa.text("900"))
    )
    # The schedule (by name) that created the task, if any.
    op.add_column("tasks", sa.Column("schedule", sa.Text))
    op.create_check_constraint("tasks_queue_check", "tasks", "queue ~ '^[a-z0-9_-]{1,64}$'")
    op.create_check_constraint("tasks_priority_check", "tasks", "priority BETWEEN -100 AND 100")
    op.create_check_constraint("tasks_timeout_check", "tasks", "timeout BETWEEN 1 AND 86400")
    op.drop_constraint("tasks_status_check", "tasks", type_="check")
    op.create_check_constraint("tasks_status_check", "tasks", NEW_STATUSES)


def downgrade() -> None:
    # Cancelled tasks have no older status to map to: they end as failed, with the reason.
    op.execute(
        "UPDATE tasks SET status = 'failed', "
        "last_error = coalesce(last_error, 'cancelled') WHERE status = 'cancelled'"
    )
    op.drop_constraint("tasks_status_check", "tasks", type_="check")
    op.create_check_constraint("tasks_status_check", "tasks", OLD_STATUSES)
    op.drop_constraint("tasks_timeout_check", "tasks", type_="check")
    op.drop_constraint("tasks_priority_check", "tasks", type_="check")
    op.drop_constraint("tasks_queue_check", "tasks", type_="check")
    for column in ("schedule", "timeout", "cancel_requested", "result", "priority", "queue"):
        op.drop_column("tasks", column)
