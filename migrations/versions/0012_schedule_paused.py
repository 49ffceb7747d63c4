"""Schedules can be paused: ``schedules.paused`` (PUT /v1/schedules/{name}).

A paused schedule does not fire; resuming it moves ``next_run_at`` to the first due time
after the resume, so the ticks missed while paused never run. NOT NULL with a constant
default is a catalogue change only (PostgreSQL 11+): no rewrite, and a release before this
one (which never names the column) keeps inserting schedules beside it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "schedules",
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.text("false")),
    )


def downgrade() -> None:
    op.drop_column("schedules", "paused")
