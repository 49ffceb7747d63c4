"""Index finished tasks by completed_at: the dashboard's throughput per minute.

/v1/stats counts the tasks finished in the last minutes; without an index that is a scan
of the whole table every few seconds. Partial (finished tasks only), so pending and
processing rows never enter it; the finishing UPDATE already writes a new entry in every
index of the table (status is indexed, so it is never a HOT update): this adds one.
Built CONCURRENTLY, so a large table keeps taking writes meanwhile.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "tasks_finished_idx",
            "tasks",
            ["completed_at"],
            postgresql_where=sa.text("completed_at IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("tasks_finished_idx", table_name="tasks", postgresql_concurrently=True)
