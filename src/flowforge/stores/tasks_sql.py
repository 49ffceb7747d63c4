"""The SQL of tasks: what TaskStore runs (GET, list, POST, batch, PUT, DELETE, cancel,
retry, the admission count) and ``flowforge tasks stats``. The statuses cancel and retry
apply to, and the ones a PUT or a delete treats apart, come from the state machine
(``flowforge.domain.states``)."""

from __future__ import annotations

import functools

from ..domain.states import (
    CANCELLABLE,
    CLIENT_TRANSITIONS,
    FINISHED,
    RETRYABLE,
    UNDELETABLE,
    UNFINISHED,
    Status,
    sql_list,
)
from ..domain.tasks import TASK_COLUMNS
from .attempts_sql import folded
from .common_sql import CANCEL_CHANNEL, NOTIFY_CHANNEL, WORKER_WAITING

COLUMNS = ", ".join(TASK_COLUMNS)

GET_TASK = f"SELECT {COLUMNS} FROM tasks WHERE id = %(id)s"

# Newest first, optionally filtered (GET /v1/tasks). One fixed statement per combination
# of filters (status, type, queue), columns and paging style, so each is prepared with a
# plan of its own; each filter has an index in the newest-first order (tasks_created_idx,
# tasks_status_created_idx, tasks_type_created_idx, tasks_queue_created_idx).
LIST_FILTERS: tuple[str, ...] = ("status", "type", "queue")
# Up to this many matching rows meta.total is counted; above it, PostgreSQL's estimate.
EXACT_TOTAL_MAX = 10_000
# Count only when the planner's estimate is below this: a 10x margin over EXACT_TOTAL_MAX,
# so stale statistics never turn a countable total into an estimate.
COUNT_WHEN_ESTIMATE_BELOW = 100_000


def _where(filters: tuple[str, ...]) -> str:
    unknown = set(filters) - set(LIST_FILTERS)
    if unknown:
        raise ValueError(f"no such list filter: {', '.join(sorted(unknown))}")
    return " AND ".join(f"{name} = %({name})s" for name in filters) or "true"


@functools.cache
def list_tasks(
    filters: tuple[str, ...], columns: tuple[str, ...] = TASK_COLUMNS, after: bool = False
) -> str:
    """Rows of one page of GET /v1/tasks, newest first, with these filters (names). With
    ``after``, the page starts below the key (created_at, id) of the previous page's last
    row (keyset: an index range scan, as cheap at page 5,000 as at page 1); otherwise at
    ``offset``. The caller asks for one row more than a page to know whether one follows."""
    unknown = set(columns) - set(TASK_COLUMNS)
    if unknown:
        raise ValueError(f"no such task column: {', '.join(sorted(unknown))}")
    where = _where(filters)
    if after:
        where += " AND (created_at, id) < (%(after_created_at)s, %(after_id)s)"
    return f"""
SELECT {", ".join(columns)} FROM tasks
WHERE {where}
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s{"" if after else " OFFSET %(offset)s"}
"""


@functools.cache
def count_tasks(filters: tuple[str, ...]) -> str:
    """Matching tasks, counted up to %(cap)s rows (an index-only walk that stops there)."""
    return f"SELECT count(*) FROM (SELECT FROM tasks WHERE {_where(filters)} LIMIT %(cap)s) t"


@functools.cache
def estimate_tasks(filters: tuple[str, ...]) -> str:
    """The planner's row estimate for these filters: planning only, nothing is read."""
    return f"EXPLAIN (FORMAT JSON) SELECT FROM tasks WHERE {_where(filters)}"


LIST_TASKS = list_tasks(())
LIST_TASKS_BY_STATUS = list_tasks(("status",))

# One statement, one commit: the row and, while a worker waits for work, its notification.
# (A busy worker finds the task on its next claim; bench_worker.py measures the cost of an
# unconditional NOTIFY at 8 clients.) Only the id and the time come back, as for a batch:
# the rest is what was sent and the columns' defaults (store.inserted_task); the whole row
# back cost the API 9 us of CPU and PostgreSQL 9 us more per POST.
INSERT_TASK = f"""
WITH t AS (
    INSERT INTO tasks (title, description, type, payload, max_attempts, run_at, request_id,
                       queue, priority, timeout)
    VALUES (%(title)s, %(description)s, %(type)s, %(payload)s, %(max_attempts)s,
            coalesce(%(run_at)s, now()), %(request_id)s, %(queue)s, %(priority)s, %(timeout)s)
    RETURNING id, created_at
)
SELECT t.id, t.created_at FROM t LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""

# POST /v1/tasks with an Idempotency-Key, one statement: the key row is claimed first (its
# task id drawn from the tasks sequence), and the task is inserted only if the claim
# succeeded. A concurrent request with the same key waits on the key's unique index until
# the first commits, then inserts nothing (the store then reads the key: a replay or a
# mismatch). A key older than 24 hours is taken over as if new (a batch's ids cleared by
# it, or a single task's id replaced by a batch's). Each new key also deletes up to 10
# expired ones (created_at index): the table stays bounded without a job.
IDEMPOTENCY_TTL = "interval '24 hours'"
_TAKE_OVER_EXPIRED_KEY = f"""ON CONFLICT (token_id, key) DO UPDATE SET
        request_hash = excluded.request_hash,
        task_id = excluded.task_id,
        task_ids = excluded.task_ids,
        created_at = now()
    WHERE idempotency_keys.created_at <= now() - {IDEMPOTENCY_TTL}"""
_SWEEP_EXPIRED_KEYS = f"""expired AS (
    DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM idempotency_keys
        WHERE created_at <= now() - {IDEMPOTENCY_TTL}
          AND NOT (token_id = %(token_id)s AND key = %(key)s)
        ORDER BY created_at LIMIT 10
        FOR UPDATE SKIP LOCKED))
)"""
INSERT_TASK_WITH_KEY = f"""
WITH k AS (
    INSERT INTO idempotency_keys (token_id, key, request_hash, task_id)
    VALUES (%(token_id)s, %(key)s, %(hash)s, nextval(pg_get_serial_sequence('tasks', 'id')))
    {_TAKE_OVER_EXPIRED_KEY}
    RETURNING task_id
), t AS (
    INSERT INTO tasks (id, title, description, type, payload, max_attempts, run_at,
                       request_id, queue, priority, timeout)
    SELECT k.task_id, %(title)s, %(description)s, %(type)s, %(payload)s, %(max_attempts)s,
           coalesce(%(run_at)s, now()), %(request_id)s, %(queue)s, %(priority)s, %(timeout)s
    FROM k
    RETURNING {COLUMNS}
), {_SWEEP_EXPIRED_KEYS}
SELECT t.* FROM t LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""
# The key's first request, while the key is live: its body's hash, the task it made, and
# the batch's ids when a batch made it (NULL for a single create).
GET_IDEMPOTENCY_KEY = f"""
SELECT request_hash, task_id, task_ids FROM idempotency_keys
WHERE token_id = %(token_id)s AND key = %(key)s AND created_at > now() - {IDEMPOTENCY_TTL}
"""

# A batch's tasks (its JSON array) as rows, ``n`` their place in it.
_BATCH_ROWS = """ROWS FROM (jsonb_to_recordset(%(tasks)s::jsonb) AS (
        title text, description text, type text, payload jsonb, max_attempts int,
        run_at timestamptz, queue text, priority int, timeout int)
    ) WITH ORDINALITY AS r(title, description, type, payload, max_attempts, run_at, queue,
                           priority, timeout, n)"""

# POST /v1/tasks/batch: every task of the batch in one statement and one commit, from one
# JSON array (PostgreSQL parses it; no per-row round trip or bind), in the batch's order
# (ids are drawn in that order; the store sorts by id). Only the id and the time come
# back (now(): the same for every row of the statement): the store knows the rest, and
# sending 1,000 rows back and building them costs more than the insert. One notification
# for the whole batch while a worker waits: the join with the NOTIFY is not per row.
INSERT_TASKS = f"""
WITH t AS (
    INSERT INTO tasks (title, description, type, payload, max_attempts, run_at, request_id,
                       queue, priority, timeout)
    SELECT r.title, r.description, r.type, r.payload, r.max_attempts,
           coalesce(r.run_at, now()), %(request_id)s, r.queue, r.priority, r.timeout
    FROM {_BATCH_ROWS}
    ORDER BY r.n
    RETURNING id, created_at
)
SELECT t.id, t.created_at FROM t LEFT JOIN (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""

# POST /v1/tasks/batch with an Idempotency-Key, one statement as for a single create: the
# batch's ids are drawn first (in its order: the sorted subquery is not flattened), the
# key claimed with all of them (task_ids) and the tasks inserted only if the claim
# succeeded; a concurrent request with the key waits for the first to commit and inserts
# nothing. A replay has drawn ids it does not use: gaps in the sequence, as a replayed
# single create leaves one.
INSERT_TASKS_WITH_KEY = f"""
WITH r AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('tasks', 'id')) AS id, r.*
    FROM (SELECT * FROM {_BATCH_ROWS} ORDER BY r.n) AS r
), k AS (
    INSERT INTO idempotency_keys (token_id, key, request_hash, task_id, task_ids)
    SELECT %(token_id)s, %(key)s, %(hash)s, min(r.id), array_agg(r.id ORDER BY r.n) FROM r
    {_TAKE_OVER_EXPIRED_KEY}
    RETURNING task_ids
), t AS (
    INSERT INTO tasks (id, title, description, type, payload, max_attempts, run_at,
                       request_id, queue, priority, timeout)
    SELECT r.id, r.title, r.description, r.type, r.payload, r.max_attempts,
           coalesce(r.run_at, now()), %(request_id)s, r.queue, r.priority, r.timeout
    FROM r WHERE EXISTS (SELECT FROM k)
    ORDER BY r.n
    RETURNING id, created_at
), {_SWEEP_EXPIRED_KEYS}
SELECT t.id, t.created_at FROM t LEFT JOIN (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""
# A replayed batch's tasks as they are now, in the batch's order (a deleted one is missing).
GET_TASKS_IN_ORDER = f"""
SELECT {COLUMNS} FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS u(id, n)
JOIN tasks USING (id) ORDER BY u.n
"""

GET_TASK_FOR_UPDATE = GET_TASK + " FOR UPDATE"

# PUT: the client's fields, and what a status change means for the queue's columns.
# %(status)s is the wanted status; unchanged status leaves the queue columns alone. A PUT
# that moves a task back to pending (a dead letter re-queued) starts it over, as a retry.
_REQUEUED = sql_list(s for s, t in CLIENT_TRANSITIONS if t == Status.PENDING and s != t)
_REQUEUE = f"status IN ({_REQUEUED}) AND %(status)s = 'pending'"
UPDATE_TASK = f"""
UPDATE tasks SET
    title = %(title)s,
    description = %(description)s,
    type = %(type)s,
    payload = %(payload)s,
    max_attempts = %(max_attempts)s,
    queue = %(queue)s,
    priority = %(priority)s,
    timeout = %(timeout)s,
    run_at = CASE
        WHEN %(run_at)s::timestamptz IS NOT NULL THEN %(run_at)s::timestamptz
        WHEN status <> 'pending' AND %(status)s = 'pending' THEN now()
        ELSE run_at END,
    attempts = CASE WHEN {_REQUEUE} THEN 0 ELSE attempts END,
    lease_expiries = CASE WHEN {_REQUEUE} THEN 0 ELSE lease_expiries END,
    cancel_requested = CASE WHEN {_REQUEUE} THEN false ELSE cancel_requested END,
    result = CASE WHEN {_REQUEUE} THEN NULL ELSE result END,
    started_at = CASE WHEN status <> 'processing' AND %(status)s = 'processing'
        THEN now() ELSE started_at END,
    completed_at = CASE
        WHEN %(status)s IN ({sql_list(FINISHED)}) AND status <> %(status)s THEN now()
        WHEN %(status)s IN ({sql_list(UNFINISHED)}) THEN NULL
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
    {folded("status <> %(status)s")},
    status = %(status)s,
    updated_at = now()
WHERE id = %(id)s
RETURNING {COLUMNS}
"""

# A task a worker holds is not deleted (the worker would run on): cancel it first. The
# status is checked in the statement itself, so a claim that commits meanwhile wins.
DELETE_TASK = (
    f"DELETE FROM tasks WHERE id = %(id)s AND status NOT IN ({sql_list(UNDELETABLE)}) RETURNING id"
)
GET_TASK_STATUS = "SELECT status FROM tasks WHERE id = %(id)s"

# POST /v1/tasks/{id}/cancel, one conditional statement (no read-then-write): a pending
# task is cancelled at once; a processing one is flagged, and the worker holding it is told
# (it ends the task cancelled when its handler returns). Anything else matches no row (409).
# Racing a claim, the UPDATE waits for the claim's row lock and re-reads the row: it then
# sees 'processing' and flags it. Racing a completion, it sees 'completed': no row.
CANCEL_TASK = f"""
WITH c AS (
    UPDATE tasks SET
        status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
        completed_at = CASE WHEN status = 'pending' THEN now() ELSE completed_at END,
        cancel_requested = true,
        updated_at = now()
    WHERE id = %(id)s AND status IN ({sql_list(CANCELLABLE)})
    RETURNING {COLUMNS}
)
SELECT c.* FROM c LEFT JOIN LATERAL (
    SELECT pg_notify('{CANCEL_CHANNEL}', c.id::text) WHERE c.status = 'processing'
) AS n ON true
"""

# POST /v1/tasks/{id}/retry: a finished task (failed, cancelled or completed) starts over:
# pending now, attempts and lease expiries back to 0, no cancel request, no result.
# last_error is kept (why it failed last time) until an attempt ends again. One
# conditional statement, so a retry racing a worker's outcome either sees the task
# finished (and re-queues it) or still processing (409); and while a worker waits, it is
# woken as task creation does.
RETRY_TASK = f"""
WITH r AS (
    UPDATE tasks SET
        status = 'pending',
        attempts = 0,
        lease_expiries = 0,
        cancel_requested = false,
        result = NULL,
        run_at = now(),
        started_at = NULL,
        completed_at = NULL,
        {folded("true")},
        updated_at = now()
    WHERE id = %(id)s AND status IN ({sql_list(RETRYABLE)})
    RETURNING {COLUMNS}
)
SELECT r.* FROM r LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""

# Pending tasks, counted no further than the limit needs (API_MAX_PENDING): the partial
# index tasks_claim_idx holds exactly the pending rows, so this is a short index-only walk.
COUNT_PENDING_UPTO = """
SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending' LIMIT %(limit)s) AS p
"""


# flowforge tasks stats: counts by queue and status, and how long the oldest due pending
# task of each queue has waited.
TASK_STATS = """
SELECT queue, status, count(*),
       extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'pending'
                                                      AND run_at <= now()))
FROM tasks GROUP BY queue, status ORDER BY queue, status
"""
