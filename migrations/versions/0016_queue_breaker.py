"""queue_settings gains the circuit breaker (off by default: NULL).

``breaker_failures`` failed attempts within ``breaker_window`` seconds pause the queue
(``paused_by`` 'breaker', ``tripped_at``); ``breaker_cooldown`` seconds later the limited
claim lets one task through (``probe_task``), and the worker that records its outcome
resumes the queue on a success or trips it again on a failure. ``failures`` is the log
of the failed attempts within the window (at most ``breaker_failures`` entries), written
only when a breaker queue's attempt fails: the claim and the finish of other tasks never
touch it.

New nullable columns and a defaulted array: catalogue changes only, on a small table.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("breaker_failures", "breaker_window", "breaker_cooldown", "failures", "tripped_at",
           "probe_task")  # fmt: skip


def upgrade() -> None:
    op.add_column("queue_settings", sa.Column("breaker_failures", sa.Integer))
    op.add_column("queue_settings", sa.Column("breaker_window", sa.Float))
    op.add_column("queue_settings", sa.Column("breaker_cooldown", sa.Float))
    op.add_column(
        "queue_settings",
        sa.Column(
            "failures",
            ARRAY(sa.DateTime(timezone=True)),
            nullable=False,
            server_default=sa.text("'{}'"),
        ),
    )
    op.add_column("queue_settings", sa.Column("tripped_at", sa.DateTime(timezone=True)))
    op.add_column("queue_settings", sa.Column("probe_task", sa.BigInteger))
    op.create_check_constraint(
        "queue_settings_breaker_check",
        "queue_settings",
        "(breaker_failures IS NULL) = (breaker_window IS NULL) "
        "AND (breaker_failures IS NULL) = (breaker_cooldown IS NULL) "
        "AND breaker_failures BETWEEN 1 AND 10000 "
        "AND breaker_window >= 0.001 AND breaker_window <= 86400 "
        "AND breaker_cooldown >= 0.001 AND breaker_cooldown <= 86400",
    )


def downgrade() -> None:
    op.drop_constraint("queue_settings_breaker_check", "queue_settings")
    for column in COLUMNS:
        op.drop_column("queue_settings", column)
