"""Idempotency-Key on POST /v1/tasks/batch: ``idempotency_keys.task_ids``, the ids of the
tasks a batch created, in the batch's order.

NULL for a key a single create used (``task_id`` is its task); for a batch's key, the
batch's ids (``task_id`` holds the first, as the column is NOT NULL). The column tells
the two apart: a key first used by one kind of create and then sent to the other is
refused as a mismatch, never answered with the other's tasks.

A nullable column with no default is a catalogue change only: no rewrite, and a release
before this one (which never reads the column) keeps working beside it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("task_ids", ARRAY(sa.BigInteger)))


def downgrade() -> None:
    op.drop_column("idempotency_keys", "task_ids")
