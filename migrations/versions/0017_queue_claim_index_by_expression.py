"""The per-queue claim's index keyed on ``-priority``: ``tasks_queue_claim_idx`` becomes
``(queue, (-priority), run_at, id) WHERE status = 'pending'``, and the per-queue scans
(named WORKER_QUEUES, the claim beside restricted queues, the limited queues' claim)
order by ``-priority, run_at, id``.

Keyed on ``priority DESC`` as revision 0007 made it, the index gave the same order as
``tasks_priority_claim_idx`` (every queue's), and once the table was analysed the planner
took that one for a single queue's scan, filtering on the queue: it counts on a queue's
rows being spread evenly, so a claim of 50 from a queue behind another queue's backlog
of 50,000 walked the whole backlog (10 ms instead of 0.1). Ordered by an expression only
this index has, a queue's scan can only be this index's.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("tasks_queue_claim_idx", table_name="tasks")
    op.create_index(
        "tasks_queue_claim_idx",
        "tasks",
        ["queue", sa.text("(-priority)"), "run_at", "id"],
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("tasks_queue_claim_idx", table_name="tasks")
    op.create_index(
        "tasks_queue_claim_idx",
        "tasks",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=PENDING,
    )
