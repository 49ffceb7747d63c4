"""Keep every attempt of a task: ``tasks.attempt_log``, a jsonb array in the task's row.

Each attempt's entry (number, worker, start and end, outcome, error, the handler's
traceback, the child's CPU time, peak RSS and exit signal) is appended by the statement
that already writes the attempt's outcome (the worker's finishing UPDATE, the reaper's
lease expiry, a shutdown's give-back), bounded by TASK_ATTEMPTS_KEPT (oldest dropped).

Why in the row and not a table of attempts (River keeps ``errors jsonb[]`` in the job
row, Oban an ``errors`` array, for the same reason): the finishing UPDATE rewrites the
whole row anyway (status is indexed: never a HOT update), so one more jsonb value in it
costs a few hundred bytes of that write, while a table would cost one more heap tuple
and at least one more index entry per attempt, WAL for both, and its own vacuum, at
tens of thousands of tasks a second. The history lives and dies with its task (a
deletion or a cleanup takes it along, nothing to join or prune), and it is read one task
at a time (GET /v1/tasks/{id}/attempts), never across tasks. No list or single read of
a task selects the column (domain.tasks.TASK_COLUMNS): only that route reads it. Large
entries (tracebacks) are TOASTed out of line, and an unchanged TOASTed value is not
copied again by an UPDATE that leaves the column alone (the claim).

``ADD COLUMN ... DEFAULT '[]'`` is a catalogue change only (PostgreSQL 11+): no rewrite of
a large table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tasks",
        sa.Column("attempt_log", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    )


def downgrade() -> None:
    op.drop_column("tasks", "attempt_log")
