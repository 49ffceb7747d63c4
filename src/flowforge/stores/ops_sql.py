"""The operator scripts' SQL: scripts/seed-database.py, healthcheck.py and cleanup.py
(flowforge.ops runs them), and the pruning of finished tasks that cleanup.py shares with
the worker's retention duty (worker/duties/retention.py)."""

from __future__ import annotations

from typing import Any

from ..domain.states import FINISHED
from .common_sql import PRUNE_LOCK_KEY

# The seeder streams rows with COPY, one transaction per batch: far faster than INSERTs.
SEED_COLUMNS: tuple[str, ...] = (
    "title",
    "description",
    "status",
    "type",
    "payload",
    "attempts",
    "max_attempts",
    "last_error",
    "run_at",
    "started_at",
    "completed_at",
    "worker",
    "request_id",
    "created_at",
    "updated_at",
    "lease_expires_at",
    "lease_token",
)
SEED_COPY = f"COPY tasks ({', '.join(SEED_COLUMNS)}) FROM STDIN"

# The health of the queue: how long the oldest due pending task has waited, and how many
# processing tasks are past their lease by more than a grace (the reaper gives such tasks
# back, so more than a few means no worker is running it). Both walk the partial indexes.
QUEUE_HEALTH = """
SELECT
    (SELECT extract(epoch FROM now() - min(run_at))
     FROM tasks WHERE status = 'pending' AND run_at <= now()) AS oldest_pending_seconds,
    (SELECT count(*) FROM tasks WHERE status = 'pending' AND run_at <= now()) AS due_pending,
    (SELECT count(*) FROM tasks WHERE status = 'processing') AS processing,
    (SELECT count(*) FROM tasks WHERE status = 'processing'
       AND lease_expires_at < now() - make_interval(secs => %(grace)s)) AS stuck
"""

# Live workers (the registry) and the queues whose due pending tasks no live worker
# serves: the healthcheck's "is anyone there to run them?".
LIVE_WORKERS = """
SELECT id, queues, capacity, busy, isolation, version,
       extract(epoch FROM now() - heartbeat_at) AS heartbeat_age
FROM workers WHERE expires_at > now() ORDER BY id
"""
UNSERVED_QUEUES = """
SELECT p.queue, p.due, extract(epoch FROM now() - p.oldest) AS waited
FROM (SELECT queue, count(*) AS due, min(run_at) AS oldest FROM tasks
      WHERE status = 'pending' AND run_at <= now() GROUP BY queue) AS p
WHERE NOT EXISTS (
    SELECT 1 FROM workers w
    WHERE w.expires_at > now() AND ('*' = ANY(w.queues) OR p.queue = ANY(w.queues)))
ORDER BY p.queue
"""

# An age's cutoff, taken from the server's clock (a client's may be off): %(seconds)s
# before now.
AGE_CUTOFF = "SELECT now() - make_interval(secs => %(seconds)s)"

# Pruning, one batch: up to %(limit)s tasks of %(statuses)s (final ones) that finished
# before %(cutoff)s, oldest first along tasks_finished_idx (completed_at), each batch its
# own short transaction. It deletes only while it holds the pruning lock, for this
# statement alone: a second pruner (another worker, cleanup.py) meanwhile deletes nothing
# and learns so (led false). Rows a worker holds locked right now are skipped, never
# waited for. Nothing else points at a task: its attempts are a column (attempt_log), and
# an Idempotency-Key of a deleted task answers a replay 409 until the key expires.
# One row per status deleted, or a single row with status NULL when none was.
PRUNABLE: tuple[str, ...] = tuple(s.value for s in FINISHED)  # what may go by age
PRUNE_FINISHED = f"""
WITH leader AS (
    SELECT pg_try_advisory_xact_lock({PRUNE_LOCK_KEY}) AS led
), doomed AS (
    SELECT id FROM tasks
    WHERE completed_at < %(cutoff)s AND status = ANY(%(statuses)s)
      AND (SELECT led FROM leader)
    ORDER BY completed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id RETURNING t.status
)
SELECT leader.led, g.status, g.n
FROM leader LEFT JOIN (SELECT status, count(*) AS n FROM gone GROUP BY status) AS g ON true
"""
PRUNE_BATCH = 1000  # rows per pruning statement (cleanup.py's --batch-size default)


def pruned(rows: list[tuple[Any, ...]]) -> tuple[bool, dict[str, int]]:
    """PRUNE_FINISHED's answer: whether it held the lock, and the tasks deleted by status."""
    return bool(rows[0][0]), {status: n for _, status, n in rows if status is not None}


# Cleanup selects tasks by status and by age: the time since they last changed (finished
# ones by completed_at). %(cutoff)s NULL means any age (--all). Finished tasks of an age
# go by PRUNE_FINISHED; this walk is for the rest (--all, pending or processing ones).
_CLEANUP_WHERE = """
status = ANY(%(statuses)s)
AND (%(cutoff)s::timestamptz IS NULL
     OR coalesce(completed_at, updated_at) < %(cutoff)s::timestamptz)
"""
CLEANUP_COUNT = f"""
SELECT status, count(*) FROM tasks WHERE {_CLEANUP_WHERE} GROUP BY status ORDER BY status
"""
# One batch: the next %(limit)s matching ids after %(after)s (walking the primary key, so
# each batch starts where the last stopped), each batch its own short transaction. Rows a
# worker holds locked right now are skipped, never waited for.
CLEANUP_DELETE_BATCH = f"""
WITH doomed AS (
    SELECT id FROM tasks
    WHERE id > %(after)s AND {_CLEANUP_WHERE}
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id RETURNING t.id, t.status
)
SELECT status, count(*), max(id) FROM gone GROUP BY status
"""
