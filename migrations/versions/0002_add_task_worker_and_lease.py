"""Add who holds a task and its lease: worker, lease_expires_at, lease_token, lease_expiries.

An additive change: existing rows keep working (NULL lease, zero expiries), so it can be
applied while an older API is still serving.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("worker", sa.Text))
    op.add_column("tasks", sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
    op.add_column("tasks", sa.Column("lease_token", sa.Uuid))
    op.add_column(
        "tasks",
        sa.Column("lease_expiries", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.create_index(
        "tasks_lease_idx",
        "tasks",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'processing'"),
    )


def downgrade() -> None:
    op.drop_index("tasks_lease_idx", table_name="tasks")
    op.drop_column("tasks", "lease_expiries")
    op.drop_column("tasks", "lease_token")
    op.drop_column("tasks", "lease_expires_at")
    op.drop_column("tasks", "worker")
