"""``flowforge_enqueue(title, type, payload, queue, priority, run_at)``: a task created in
the caller's own transaction (DESIGN.md, "Results, waiting, workflows, clients").

An application on the same database inserts a task with its own writes, atomically: the
row is visible to workers, and the wake-up NOTIFY delivered, only when that transaction
commits (PostgreSQL holds a transaction's notifications until then and drops them on a
rollback). The insert is POST /v1/tasks's for these fields: title and type stripped of
surrounding blanks, run_at NULL meaning now, the columns' defaults for the rest
(description, max_attempts, timeout), the table's CHECKs refusing bad values. Idle workers
are notified as the API's insert notifies them: only while one holds the idle lock.

The defaults are the task field table's (flowforge.domain.fields) and the channel and
lock key are common_sql's, written here as literals: a migration is frozen history
(tests/integration/test_enqueue.py holds the defaults to the field table).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Positional references ($1...): the parameters share their names with the columns.
CREATE = """
CREATE FUNCTION flowforge_enqueue(
    title text,
    type text DEFAULT 'noop',
    payload jsonb DEFAULT '{}'::jsonb,
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL
) RETURNS bigint
LANGUAGE sql VOLATILE
AS $$
WITH t AS (
    INSERT INTO tasks (title, type, payload, queue, priority, run_at)
    VALUES (btrim($1), btrim($2), $3, $4, $5, coalesce($6, now()))
    RETURNING id
)
SELECT t.id FROM t LEFT JOIN LATERAL (
    SELECT pg_notify('flowforge_tasks', '')
    WHERE CASE WHEN pg_try_advisory_lock(5074553438213206631)
               THEN NOT pg_advisory_unlock(5074553438213206631) ELSE true END
) AS n ON true
$$
"""
SIGNATURE = "flowforge_enqueue(text, text, jsonb, text, integer, timestamptz)"


def upgrade() -> None:
    op.execute(CREATE)
    op.execute(
        f"COMMENT ON FUNCTION {SIGNATURE} IS "
        "'A FlowForge task in the caller''s transaction; returns its id (docs/enqueue.md)'"
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
