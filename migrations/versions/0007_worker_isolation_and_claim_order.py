"""Worker isolation and queue control, the worker's side: attempts bounded by a CHECK,
the claim in priority order per queue, and the live-worker registry.

- ``tasks_attempts_check``: ``0 <= attempts <= max_attempts``, always. Rows an older
  release pushed over the limit (a lease that expired on the last attempt was given back
  and claimed again) are first set to their limit, and, if still pending or processing,
  failed with that reason.
- The claim serves the highest priority first, FIFO by run_at then id within one, from the
  worker's queues: ``tasks_priority_claim_idx`` (any queue, ``WORKER_QUEUES=*``) and
  ``tasks_queue_claim_idx`` (named queues, one ordered scan each). Both are partial on
  pending rows, like ``tasks_claim_idx`` (run_at order), which stays for "when is the next
  task due" and the healthcheck's oldest pending age.
- ``tasks_exhausted_idx``: pending rows whose attempts are used up (an API edit lowered
  max_attempts); the claim skips them and the reaper fails them. Empty in normal operation.
- ``workers``: one row per live worker process, refreshed with its heartbeat; rows whose
  ``expires_at`` passed belong to dead workers and are deleted by the next reaper.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE tasks SET attempts = max_attempts, "
        "status = CASE WHEN status IN ('pending', 'processing') THEN 'failed' ELSE status END, "
        "completed_at = CASE WHEN status IN ('pending', 'processing') THEN now() "
        "ELSE completed_at END, "
        "lease_token = CASE WHEN status IN ('pending', 'processing') THEN NULL "
        "ELSE lease_token END, "
        "lease_expires_at = CASE WHEN status IN ('pending', 'processing') THEN NULL "
        "ELSE lease_expires_at END, "
        "last_error = CASE WHEN status IN ('pending', 'processing') THEN "
        "format('attempts used up: ran %s times of max_attempts %s (before revision 0007)', "
        "attempts, max_attempts) ELSE last_error END, "
        "updated_at = now() "
        "WHERE attempts > max_attempts"
    )
    op.execute("UPDATE tasks SET attempts = 0 WHERE attempts < 0")
    op.create_check_constraint(
        "tasks_attempts_check", "tasks", "attempts >= 0 AND attempts <= max_attempts"
    )
    op.create_index(
        "tasks_priority_claim_idx",
        "tasks",
        [sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "tasks_queue_claim_idx",
        "tasks",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "tasks_exhausted_idx",
        "tasks",
        ["id"],
        postgresql_where=sa.text("status = 'pending' AND attempts >= max_attempts"),
    )
    op.create_table(
        "workers",
        # host:pid, as tasks.worker names the holder of a task.
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        # The queues it claims from; {'*'} = every queue.
        sa.Column("queues", ARRAY(sa.Text), nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("busy", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("isolation", sa.Text, nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column(
            "heartbeat_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        # Alive until then (heartbeat + WORKER_LEASE): a worker that stops heartbeating
        # is dead from this moment on, whatever the readers' own settings are.
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("capacity >= 1 AND busy >= 0", name="workers_capacity_check"),
    )
    op.create_index("workers_expires_idx", "workers", ["expires_at"])


def downgrade() -> None:
    op.drop_index("workers_expires_idx", table_name="workers")
    op.drop_table("workers")
    op.drop_index("tasks_exhausted_idx", table_name="tasks")
    op.drop_index("tasks_queue_claim_idx", table_name="tasks")
    op.drop_index("tasks_priority_claim_idx", table_name="tasks")
    op.drop_constraint("tasks_attempts_check", "tasks", type_="check")
