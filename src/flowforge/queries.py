"""Every SQL statement FlowForge runs, in one place.

Statements use psycopg's ``%(name)s`` placeholders; psycopg prepares a statement on the
server after a few runs on one connection, so hot queries skip parse and plan.
"""

from __future__ import annotations

from .models import TASK_COLUMNS

COLUMNS = ", ".join(TASK_COLUMNS)

# Idle workers LISTEN here; creating (or re-queueing) a task notifies it in the same
# transaction. The payload is constant so PostgreSQL folds the notifications of one
# transaction into one.
NOTIFY_CHANNEL = "flowforge_tasks"

HEALTH = "SELECT 1"

GET_TASK = f"SELECT {COLUMNS} FROM tasks WHERE id = %(id)s"

# Newest first. The two orderings have their own indexes (schema.py).
LIST_TASKS = f"""
SELECT {COLUMNS} FROM tasks
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
LIST_TASKS_BY_STATUS = f"""
SELECT {COLUMNS} FROM tasks
WHERE status = %(status)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_TASKS = "SELECT count(*) FROM tasks"
COUNT_TASKS_BY_STATUS = "SELECT count(*) FROM tasks WHERE status = %(status)s"

# One statement, one commit: the row and its notification.
INSERT_TASK = f"""
WITH t AS (
    INSERT INTO tasks (title, description, type, payload, max_attempts, run_at, request_id)
    VALUES (%(title)s, %(description)s, %(type)s, %(payload)s, %(max_attempts)s,
            coalesce(%(run_at)s, now()), %(request_id)s)
    RETURNING {COLUMNS}
)
SELECT t.* FROM t CROSS JOIN LATERAL (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS n
"""

GET_TASK_FOR_UPDATE = GET_TASK + " FOR UPDATE"

# PUT: the client's fields, and what a status change means for the queue's columns.
# %(status)s is the wanted status; unchanged status leaves the queue columns alone.
UPDATE_TASK = f"""
UPDATE tasks SET
    title = %(title)s,
    description = %(description)s,
    type = %(type)s,
    payload = %(payload)s,
    max_attempts = %(max_attempts)s,
    run_at = CASE
        WHEN %(run_at)s::timestamptz IS NOT NULL THEN %(run_at)s::timestamptz
        WHEN status <> 'pending' AND %(status)s = 'pending' THEN now()
        ELSE run_at END,
    attempts = CASE WHEN status = 'failed' AND %(status)s = 'pending' THEN 0 ELSE attempts END,
    lease_expiries = CASE WHEN status = 'failed' AND %(status)s = 'pending'
        THEN 0 ELSE lease_expiries END,
    started_at = CASE WHEN status <> 'processing' AND %(status)s = 'processing'
        THEN now() ELSE started_at END,
    completed_at = CASE
        WHEN %(status)s IN ('completed', 'failed') AND status <> %(status)s THEN now()
        WHEN %(status)s IN ('pending', 'processing') THEN NULL
        ELSE completed_at END,
    -- A client-made claim still expires, so the task is never stuck in processing.
    lease_expires_at = CASE
        WHEN %(status)s = 'processing' AND status <> 'processing'
            THEN now() + make_interval(secs => %(lease_seconds)s)
        WHEN %(status)s <> 'processing' THEN NULL
        ELSE lease_expires_at END,
    lease_token = CASE
        WHEN %(status)s = 'processing' AND status <> 'processing' THEN gen_random_uuid()
        WHEN %(status)s <> 'processing' THEN NULL
        ELSE lease_token END,
    worker = CASE WHEN %(status)s = 'processing' AND status <> 'processing'
        THEN NULL ELSE worker END,
    status = %(status)s,
    updated_at = now()
WHERE id = %(id)s
RETURNING {COLUMNS}
"""

NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"

DELETE_TASK = "DELETE FROM tasks WHERE id = %(id)s RETURNING id"
