"""Indexes for the list filters type and queue, in the list's newest-first order.

GET /v1/tasks?type=... (or queue=...) walks its own index from the newest row and stops
after a page, as status= already does with tasks_status_created_idx; without them a filter
on a rare type scans the whole newest-first index. Built CONCURRENTLY (outside the
migration's transaction), so a large table keeps taking writes while they build.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {"tasks_type_created_idx": "type", "tasks_queue_created_idx": "queue"}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, column in INDEXES.items():
            op.create_index(
                name,
                "tasks",
                [column, sa.text("created_at DESC"), sa.text("id DESC")],
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, table_name="tasks", postgresql_concurrently=True)
