"""Create queue_settings: a queue's pause, concurrency limit and rate limit.

One row per queue that has settings (a queue with none has no row, and the worker's
claim is then the statement it ran before this table existed). The worker's claim of a
limited queue locks its row (FOR UPDATE: only that queue's claimers wait on each other),
counts the queue's running tasks and the starts in its rate window, and claims at most
what is left.

- ``paused``, ``paused_by``: not claimed while paused; who paused it ('operator' through
  the API or the CLI, 'breaker' for the circuit breaker).
- ``concurrency``: tasks of the queue running at once, across all workers (NULL: any).
- ``rate_limit`` per ``rate_per`` seconds: tasks started in any window of that length,
  across all workers (NULL: any). ``window_starts`` / ``window_counts`` are the log of
  the claims within the last window (when, how many): a sliding window, exact, where a
  token bucket would let a burst of twice the limit through after an idle period. One
  entry per claim statement that started tasks, so never more than ``rate_limit``.

A new table: an older release serving meanwhile ignores it. No new index on tasks: the
running count walks the processing rows (a set bounded by the workers' capacity), and an
index on (queue) WHERE status = 'processing' would cost every claim one more insert.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_settings",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("paused_by", sa.Text),
        sa.Column("concurrency", sa.Integer),
        sa.Column("rate_limit", sa.Integer),
        sa.Column("rate_per", sa.Float),
        sa.Column(
            "window_starts",
            ARRAY(sa.DateTime(timezone=True)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
        sa.Column(
            "window_counts", ARRAY(sa.Integer), nullable=False, server_default=sa.text("'{}'")
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint("name ~ '^[a-z0-9_-]{1,64}$'", name="queue_settings_name_check"),
        sa.CheckConstraint(
            "paused_by IS NULL OR paused AND paused_by IN ('operator', 'breaker')",
            name="queue_settings_paused_by_check",
        ),
        sa.CheckConstraint(
            "concurrency BETWEEN 1 AND 100000", name="queue_settings_concurrency_check"
        ),
        sa.CheckConstraint(
            "(rate_limit IS NULL) = (rate_per IS NULL) AND rate_limit BETWEEN 1 AND 100000 "
            "AND rate_per >= 0.001 AND rate_per <= 86400",
            name="queue_settings_rate_check",
        ),
    )


def downgrade() -> None:
    op.drop_table("queue_settings")
