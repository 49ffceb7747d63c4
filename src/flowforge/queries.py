"""Every SQL statement FlowForge runs, in one place.

Statements use psycopg's ``%(name)s`` placeholders; psycopg prepares a statement on the
server after a few runs on one connection, so hot queries skip parse and plan.
"""

from __future__ import annotations

import functools

from psycopg import sql

from .domain.states import CANCELLABLE, RETRYABLE, sql_list
from .domain.tasks import TASK_COLUMNS

COLUMNS = ", ".join(TASK_COLUMNS)

# Idle workers LISTEN here; creating (or re-queueing) a task notifies it in the same
# transaction. The payload is constant so PostgreSQL folds the notifications of one
# transaction into one.
NOTIFY_CHANNEL = "flowforge_tasks"

# Idle workers hold this advisory lock (shared, session level) while they wait for work,
# so task creation can skip the NOTIFY when no worker waits: NOTIFY takes a global lock at
# commit and serializes concurrent committers, a busy worker does not need the wake-up.
# The key is above the int4 range, so it never meets a hashtext() key (migrations use one).
IDLE_LOCK_KEY = 0x466C6F77466F7267  # "FlowForg"
IDLE_LOCK = f"SELECT pg_advisory_lock_shared({IDLE_LOCK_KEY})"
IDLE_UNLOCK = f"SELECT pg_advisory_unlock_shared({IDLE_LOCK_KEY})"
# True when some worker holds the idle lock: the exclusive try-lock fails against a shared
# holder; when it succeeds it is released at once. Two creators that meet here both notify.
WORKER_WAITING = (
    f"CASE WHEN pg_try_advisory_lock({IDLE_LOCK_KEY}) "
    f"THEN NOT pg_advisory_unlock({IDLE_LOCK_KEY}) ELSE true END"
)

HEALTH = "SELECT 1"


def local_statement_timeout(ms: int) -> str:
    """``SET LOCAL statement_timeout`` for the rest of a transaction (SET takes no
    parameters: ``ms`` is an int, formatted here)."""
    return f"SET LOCAL statement_timeout = {int(ms)}"


def listen(channel: str) -> sql.Composed:
    """``LISTEN channel``, the channel quoted as an identifier."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


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
# mismatch). A key older than 24 hours is taken over as if new. Each new key also deletes
# up to 10 expired ones (created_at index): the table stays bounded without a job.
IDEMPOTENCY_TTL = "interval '24 hours'"
INSERT_TASK_WITH_KEY = f"""
WITH k AS (
    INSERT INTO idempotency_keys (token_id, key, request_hash, task_id)
    VALUES (%(token_id)s, %(key)s, %(hash)s, nextval(pg_get_serial_sequence('tasks', 'id')))
    ON CONFLICT (token_id, key) DO UPDATE SET
        request_hash = excluded.request_hash,
        task_id = excluded.task_id,
        created_at = now()
    WHERE idempotency_keys.created_at <= now() - {IDEMPOTENCY_TTL}
    RETURNING task_id
), t AS (
    INSERT INTO tasks (id, title, description, type, payload, max_attempts, run_at,
                       request_id, queue, priority, timeout)
    SELECT k.task_id, %(title)s, %(description)s, %(type)s, %(payload)s, %(max_attempts)s,
           coalesce(%(run_at)s, now()), %(request_id)s, %(queue)s, %(priority)s, %(timeout)s
    FROM k
    RETURNING {COLUMNS}
), expired AS (
    DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM idempotency_keys
        WHERE created_at <= now() - {IDEMPOTENCY_TTL}
          AND NOT (token_id = %(token_id)s AND key = %(key)s)
        ORDER BY created_at LIMIT 10
        FOR UPDATE SKIP LOCKED))
)
SELECT t.* FROM t LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""
# The key's first request, while the key is live: its body's hash and the task it made.
GET_IDEMPOTENCY_KEY = f"""
SELECT request_hash, task_id FROM idempotency_keys
WHERE token_id = %(token_id)s AND key = %(key)s AND created_at > now() - {IDEMPOTENCY_TTL}
"""

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
    FROM ROWS FROM (jsonb_to_recordset(%(tasks)s::jsonb) AS (
        title text, description text, type text, payload jsonb, max_attempts int,
        run_at timestamptz, queue text, priority int, timeout int)
    ) WITH ORDINALITY AS r(title, description, type, payload, max_attempts, run_at, queue,
                           priority, timeout, n)
    ORDER BY r.n
    RETURNING id, created_at
)
SELECT t.id, t.created_at FROM t LEFT JOIN (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
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
    queue = %(queue)s,
    priority = %(priority)s,
    timeout = %(timeout)s,
    run_at = CASE
        WHEN %(run_at)s::timestamptz IS NOT NULL THEN %(run_at)s::timestamptz
        WHEN status <> 'pending' AND %(status)s = 'pending' THEN now()
        ELSE run_at END,
    attempts = CASE WHEN status = 'failed' AND %(status)s = 'pending' THEN 0 ELSE attempts END,
    lease_expiries = CASE WHEN status = 'failed' AND %(status)s = 'pending'
        THEN 0 ELSE lease_expiries END,
    cancel_requested = CASE WHEN status = 'failed' AND %(status)s = 'pending'
        THEN false ELSE cancel_requested END,
    result = CASE WHEN status = 'failed' AND %(status)s = 'pending' THEN NULL ELSE result END,
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

# A re-queue (PUT back to pending) wakes a waiting worker; NOTIFY wakes them regardless
# (bulk loads, which commit once).
NOTIFY_IF_WAITING = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}"
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"

# A task a worker holds is not deleted (the worker would run on): cancel it first. The
# status is checked in the statement itself, so a claim that commits meanwhile wins.
DELETE_TASK = "DELETE FROM tasks WHERE id = %(id)s AND status <> 'processing' RETURNING id"
GET_TASK_STATUS = "SELECT status FROM tasks WHERE id = %(id)s"

# Workers LISTEN here for cancellations of tasks they run: the payload is the task's id.
CANCEL_CHANNEL = "flowforge_cancel"

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
        updated_at = now()
    WHERE id = %(id)s AND status IN ({sql_list(RETRYABLE)})
    RETURNING {COLUMNS}
)
SELECT r.* FROM r LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""


# --- worker queue ---
# The worker's statements (flowforge.worker.queue runs them). Every write that touches a
# claimed task names its lease_token: a worker whose lease expired and was given to another
# worker (the fencing token changed) updates nothing, so it can never overwrite the new
# holder's result. Outcomes and the next claim share one statement, so a busy worker pays
# one commit (one WAL flush) per batch, not two per task.

# Outcomes of finished tasks: error NULL = success; otherwise a retry after `delay`
# seconds, or `failed` once attempts are used up. Attempts are counted at claim time. A
# task whose cancel_requested is set by then ends `cancelled`, whatever the run returned
# (the API flags it; this statement and the flag meet on the row lock, so a cancel racing
# the completion has one answer). `note` is the worker's account of a cancelled run;
# `result` the handler's return value as JSON text (NULL: none, or the run failed).
_FINISH_CTE = """
finished AS (
    UPDATE tasks t SET
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN d.error IS NULL THEN 'completed'
                      WHEN t.attempts >= t.max_attempts THEN 'failed'
                      ELSE 'pending' END,
        completed_at = CASE WHEN t.cancel_requested OR d.error IS NULL
                                 OR t.attempts >= t.max_attempts
                            THEN now() END,
        run_at = CASE WHEN NOT t.cancel_requested AND d.error IS NOT NULL
                           AND t.attempts < t.max_attempts
                      THEN now() + make_interval(secs => d.delay) ELSE t.run_at END,
        last_error = CASE
            WHEN t.cancel_requested THEN coalesce(d.note, CASE
                WHEN d.error IS NULL THEN 'cancelled by request while it ran (the handler '
                                          'finished before it saw the request)'
                ELSE 'cancelled by request while it ran; the run failed meanwhile: '
                     || d.error END)
            ELSE coalesce(d.error, t.last_error) END,
        result = CASE WHEN d.error IS NULL THEN d.result::jsonb END,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(errors)s::text[],
                %(delays)s::float8[], %(results)s::text[], %(notes)s::text[])
         AS d(id, token, error, delay, result, note)
    WHERE t.id = d.id AND t.lease_token = d.token AND t.status = 'processing'
    RETURNING t.id, t.status
)"""

# Due pending tasks, highest priority first, FIFO by run_at then id within a priority,
# skipping rows another worker is claiming right now. One new fencing token per claim.
# Rows whose attempts are used up are left to the reaper (the CHECK would refuse a run).
# From any queue: one ordered scan of tasks_priority_claim_idx.
_DUE_ANY_QUEUE = """
    SELECT id FROM tasks
    WHERE status = 'pending' AND run_at <= now() AND attempts < max_attempts
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED"""
# From named queues: one ordered scan of tasks_queue_claim_idx per queue, merged. (A
# single scan with queue = ANY(...) cannot return rows in priority order: it would sort
# every due row of those queues.) Rows locked beyond the limit are released at commit.
_DUE_NAMED_QUEUES = """
    SELECT c.id FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM tasks
        WHERE status = 'pending' AND queue = q.name AND run_at <= now()
          AND attempts < max_attempts
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s"""

_CLAIM_CTE = """
claimed AS (
    UPDATE tasks t SET
        status = 'processing',
        attempts = t.attempts + 1,
        worker = %(worker)s,
        lease_token = %(token)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s),
        started_at = now(),
        completed_at = NULL,
        updated_at = now()
    FROM ({due}
    ) AS due
    WHERE t.id = due.id
    RETURNING t.id, t.type, t.payload, t.attempts, t.max_attempts, t.request_id,
              extract(epoch FROM now() - t.run_at)::float8 AS waited, t.queue, t.timeout,
              t.priority, t.run_at
)"""


def finish_and_claim(named_queues: bool) -> str:
    """One round trip and one commit: record outcomes, claim the next batch (from any
    queue, or from the queues named by %(queues)s). The answer is a single row (finished
    and cancelled ids, claimed tasks as JSON in the order to run them): parsing one JSON
    document is cheaper in Python than building a tuple per row. `waited`: seconds from
    due to claimed (metrics).

    A claim alone (no outcome to record) commits asynchronously (synchronous_commit off
    for that transaction): the idle worker's pickup does not wait for a WAL flush. Losing
    such a commit in a database crash only puts the task back to pending, and the
    worker's outcome for it is then refused as a lost lease: the at-least-once contract
    a lease expiry already has. Outcomes commit as the database is configured."""
    claim = _CLAIM_CTE.format(due=_DUE_NAMED_QUEUES if named_queues else _DUE_ANY_QUEUE)
    return f"""
WITH {_FINISH_CTE},
{claim}
SELECT (SELECT coalesce(array_agg(id), '{{}}') FROM finished) AS finished,
       (SELECT coalesce(array_agg(id), '{{}}') FROM finished WHERE status = 'cancelled')
           AS cancelled,
       (SELECT coalesce(json_agg(json_build_array(id, type, payload, attempts, max_attempts,
                                                  request_id, waited, queue, timeout)
                                 ORDER BY priority DESC, run_at, id),
                        '[]')
        FROM claimed) AS claimed,
       CASE WHEN cardinality(%(ids)s::bigint[]) = 0
            THEN set_config('synchronous_commit', 'off', true) END AS claim_only
"""


FINISH_AND_CLAIM = finish_and_claim(False)
FINISH_AND_CLAIM_QUEUES = finish_and_claim(True)

# When nothing is due: when the next pending task becomes due (a retry's backoff), so an
# idle worker wakes up for it instead of waiting for the next poll.
NEXT_RUN_AT = """
SELECT extract(epoch FROM min(run_at) - now()) FROM tasks WHERE status = 'pending'
"""

# The heartbeat: extend the leases this worker still holds and refresh its row in the
# live-worker registry, one statement. The ids returned are the ones it still holds (the
# others were reaped, or deleted or changed by someone else), each with cancel_requested:
# the fallback for a cancellation whose NOTIFY the worker missed.
HEARTBEAT = """
WITH registered AS (
    INSERT INTO workers AS w (id, host, pid, version, queues, capacity, busy, isolation,
                              expires_at)
    VALUES (%(worker)s, %(host)s, %(pid)s, %(version)s, %(queues)s, %(capacity)s,
            %(busy)s, %(isolation)s, now() + make_interval(secs => %(lease)s))
    ON CONFLICT (id) DO UPDATE SET
        busy = excluded.busy,
        heartbeat_at = now(),
        expires_at = excluded.expires_at,
        -- a new process that reuses a dead one's pid is a new worker
        started_at = CASE WHEN w.expires_at < now() THEN now() ELSE w.started_at END,
        version = excluded.version,
        queues = excluded.queues,
        capacity = excluded.capacity,
        isolation = excluded.isolation
    RETURNING 1
), held AS (
    UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS d(id, token)
    WHERE t.id = d.id AND t.lease_token = d.token AND t.status = 'processing'
    RETURNING t.id, t.cancel_requested
)
SELECT id, cancel_requested FROM held
"""

# A stopping worker leaves the registry at once (the others expire).
UNREGISTER_WORKER = "DELETE FROM workers WHERE id = %(worker)s"

# Why outcomes or heartbeats were refused: per task, what the row says now. Rare (a lease
# lost, a task deleted or changed by someone else), so a query of its own.
EXPLAIN_REFUSED = """
SELECT d.id, t.status, t.worker, t.lease_token = d.token AS ours
FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS d(id, token)
LEFT JOIN tasks t ON t.id = d.id
"""

# Graceful stop: give claimed tasks back. A task that never started gets its attempt back;
# one interrupted at the shutdown timeout keeps it and says why in last_error, and if that
# was its last attempt it ends failed (attempts never exceed max_attempts).
GIVE_BACK = f"""
WITH given AS (
    UPDATE tasks t SET
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN d.started AND t.attempts >= t.max_attempts THEN 'failed'
                      ELSE 'pending' END,
        attempts = CASE WHEN d.started THEN t.attempts ELSE greatest(t.attempts - 1, 0) END,
        last_error = CASE
            WHEN t.cancel_requested THEN 'cancelled by request; the worker was stopping'
            WHEN d.started AND t.attempts >= t.max_attempts THEN format(
                '%%s; that was the last attempt (%%s of %%s)', %(reason)s::text, t.attempts,
                t.max_attempts)
            WHEN d.started THEN %(reason)s::text
            ELSE t.last_error END,
        completed_at = CASE WHEN t.cancel_requested
                                 OR (d.started AND t.attempts >= t.max_attempts)
                            THEN now() END,
        run_at = greatest(t.run_at, now()),  -- as the reaper: a later run_at stands
        started_at = CASE WHEN t.cancel_requested
                               OR (d.started AND t.attempts >= t.max_attempts)
                          THEN t.started_at END,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(started)s::bool[])
         AS d(id, token, started)
    WHERE t.id = d.id AND t.lease_token = d.token AND t.status = 'processing'
    RETURNING t.id, t.status
)
SELECT array_agg(id), array_agg(id) FILTER (WHERE status = 'failed'),
       array_agg(id) FILTER (WHERE status = 'cancelled'), pg_notify('{NOTIFY_CHANNEL}', '')
FROM given
"""

# The reaper: tasks whose lease expired (their worker was killed, its host is gone) go back
# to pending, their run counted. A task on its last attempt ends failed ("lease expired"):
# attempts never exceed max_attempts. After max_expiries expiries a task is failed too (a
# crash loop or a poison task must not take workers down forever); one whose cancellation
# was requested ends cancelled. Any worker may run it. It also fails pending tasks whose
# attempts are used up (an edit lowered max_attempts: they can never run), and deletes
# the registry rows of workers that stopped heartbeating.
REAP_EXPIRED = f"""
WITH expired AS (
    SELECT id FROM tasks
    WHERE status = 'processing' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE tasks t SET
        lease_expiries = t.lease_expiries + 1,
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN t.lease_expiries + 1 >= %(max_expiries)s
                        OR t.attempts >= t.max_attempts
                      THEN 'failed' ELSE 'pending' END,
        completed_at = CASE WHEN t.cancel_requested
                              OR t.lease_expiries + 1 >= %(max_expiries)s
                              OR t.attempts >= t.max_attempts THEN now() END,
        last_error = CASE
            WHEN t.cancel_requested THEN format(
                'cancelled by request; its worker %%s stopped heartbeating before the run '
                'ended (lease expired)', coalesce(t.worker, '?'))
            WHEN t.lease_expiries + 1 >= %(max_expiries)s THEN format(
                'lease expired %%s times (worker %%s stopped heartbeating: killed, hung '
                'or crashed while running it); limit WORKER_MAX_LEASE_EXPIRIES=%%s',
                t.lease_expiries + 1, coalesce(t.worker, '?'), %(max_expiries)s)
            WHEN t.attempts >= t.max_attempts THEN format(
                'lease expired on the last attempt (%%s of %%s): worker %%s stopped '
                'heartbeating (killed, hung or crashed while running it)',
                t.attempts, t.max_attempts, coalesce(t.worker, '?'))
            ELSE format('lease expired (worker %%s stopped heartbeating); given back',
                        coalesce(t.worker, '?')) END,
        -- Due again now, unless it was due later (a client put a future task in
        -- processing): that time stands.
        run_at = greatest(t.run_at, now()),
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id, t.status, t.lease_expiries, t.worker, t.request_id, t.attempts,
              t.max_attempts
), exhausted AS (
    UPDATE tasks t SET
        status = 'failed',
        completed_at = now(),
        last_error = format('attempts used up (%%s of max_attempts %%s) before it could run '
                            'again: max_attempts was lowered after it ran',
                            t.attempts, t.max_attempts),
        updated_at = now()
    WHERE t.id IN (SELECT id FROM tasks WHERE status = 'pending' AND attempts >= max_attempts
                   LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
      AND t.status = 'pending' AND t.attempts >= t.max_attempts
    RETURNING t.id, t.status, t.lease_expiries, t.worker, t.request_id, t.attempts,
              t.max_attempts
), gone AS (
    DELETE FROM workers WHERE expires_at < now()
)
SELECT r.*, pg_notify('{NOTIFY_CHANNEL}', '') FROM reaped r
UNION ALL
SELECT e.*, NULL FROM exhausted e
"""

# --- metrics (GET /metrics, at scrape time) ---
# Counting a large table is what a scrape must not do (GROUP BY queue, status reads every
# row: about 1 s on 1,000,000 rows here). So each status is counted only up to a cap (an
# index-only walk of tasks_status_created_idx or the partial indexes); a status under the
# cap is then counted exactly by queue, one over it is PostgreSQL's estimate (reltuples x
# the status's frequency in pg_stats, fresh after autovacuum's ANALYZE), split by queue as
# a sample of its rows is. bench/bench_metrics.py measures a scrape.
METRICS_STATUS_CAPPED = """
SELECT s.status,
       (SELECT count(*) FROM (SELECT 1 FROM tasks t WHERE t.status = s.status
                              LIMIT %(cap)s + 1) AS c) AS capped,
       (SELECT round(c.reltuples * f.freq)::bigint
        FROM pg_class c, (SELECT v.freq FROM pg_stats p,
                          unnest(p.most_common_vals::text::text[], p.most_common_freqs)
                          AS v(value, freq)
                          WHERE p.schemaname = 'public' AND p.tablename = 'tasks'
                            AND p.attname = 'status' AND v.value = s.status) AS f
        WHERE c.oid = 'tasks'::regclass) AS estimate
FROM unnest(%(statuses)s::text[]) AS s(status)
"""
METRICS_COUNTS_EXACT = """
SELECT queue, status, count(*) FROM tasks WHERE status = ANY(%(statuses)s) GROUP BY queue, status
"""
# A large status's queue split: a sample of its rows, the newest ones (pending: the next
# due, in claim order); each walks its index.
METRICS_QUEUE_SPLIT = """
SELECT queue, count(*) FROM (
    SELECT queue FROM tasks WHERE status = %(status)s
    ORDER BY created_at DESC, id DESC LIMIT %(sample)s
) AS newest GROUP BY queue
"""
METRICS_QUEUE_SPLIT_PENDING = """
SELECT queue, count(*) FROM (
    SELECT queue FROM tasks WHERE status = 'pending' ORDER BY run_at, id LIMIT %(sample)s
) AS next_due GROUP BY queue
"""
# How long the oldest due pending task of each queue has waited (since its run_at): per
# queue, the first due row in run_at order (the claim index).
METRICS_OLDEST_PENDING = """
SELECT q.queue, extract(epoch FROM now() - (
    SELECT t.run_at FROM tasks t
    WHERE t.status = 'pending' AND t.queue = q.queue AND t.run_at <= now()
    ORDER BY t.run_at, t.id LIMIT 1))::float8
FROM unnest(%(queues)s::text[]) AS q(queue)
"""
# The oldest transaction open in this database (it pins the vacuum horizon: dead rows
# pile up in the claim index). Other roles' sessions show only with pg_read_all_stats.
METRICS_OLDEST_TRANSACTION = """
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""

# --- operator scripts ---
# scripts/seed-database.py, healthcheck.py and cleanup.py (flowforge.cli runs them).

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

# Cleanup selects tasks by status and by age: the time since they last changed (finished
# ones by completed_at). %(cutoff)s NULL means any age (--all). The cutoff is taken from the
# server's clock (a client's may be off), %(seconds)s before now.
CLEANUP_CUTOFF = "SELECT now() - make_interval(secs => %(seconds)s)"
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

# --- API tokens ---
# Only a SHA-256 of each token is stored (flowforge.tokens); the unique index on token_hash
# makes a lookup one index probe. The API caches the answers briefly (flowforge.api.auth).
TOKEN_SCOPE = "SELECT id, scope, revoked_at IS NULL FROM api_tokens WHERE token_hash = %(hash)s"
INSERT_TOKEN = """
INSERT INTO api_tokens (name, token_hash, scope) VALUES (%(name)s, %(hash)s, %(scope)s)
RETURNING id, name, scope, created_at, revoked_at
"""
LIST_TOKENS = "SELECT id, name, scope, created_at, revoked_at FROM api_tokens ORDER BY name"
# Revoking twice keeps the first revocation's time; the last column says it was so.
REVOKE_TOKEN = """
WITH old AS (SELECT id, revoked_at FROM api_tokens WHERE name = %(name)s FOR UPDATE)
UPDATE api_tokens t SET revoked_at = coalesce(t.revoked_at, now())
FROM old WHERE t.id = old.id
RETURNING t.id, t.name, t.scope, t.created_at, t.revoked_at, old.revoked_at IS NOT NULL
"""

# --- backpressure ---
# Pending tasks, counted no further than the limit needs (API_MAX_PENDING): the partial
# index tasks_claim_idx holds exactly the pending rows, so this is a short index-only walk.
COUNT_PENDING_UPTO = """
SELECT count(*) FROM (SELECT 1 FROM tasks WHERE status = 'pending' LIMIT %(limit)s) AS p
"""

# --- schedules ---
# /v1/schedules (flowforge.schedules.ScheduleStore) and the firing that workers run
# (flowforge.schedules.fire_due).
SCHEDULE_COLUMNS = (
    "name, cron, timezone, title, type, payload, queue, priority, max_attempts, timeout, "
    "next_run_at, last_run_at, created_at, updated_at"
)
INSERT_SCHEDULE = f"""
INSERT INTO schedules (name, cron, timezone, title, type, payload, queue, priority,
                       max_attempts, timeout, next_run_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(title)s, %(type)s, %(payload)s, %(queue)s,
        %(priority)s, %(max_attempts)s, %(timeout)s, %(next_run_at)s)
ON CONFLICT (name) DO NOTHING
RETURNING {SCHEDULE_COLUMNS}
"""
GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = %(name)s"
GET_SCHEDULE_FOR_UPDATE = GET_SCHEDULE + " FOR UPDATE"
LIST_SCHEDULES = f"""
SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY name LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_SCHEDULES = "SELECT count(*) FROM schedules"
UPDATE_SCHEDULE = f"""
UPDATE schedules SET
    cron = %(cron)s, timezone = %(timezone)s, title = %(title)s, type = %(type)s,
    payload = %(payload)s, queue = %(queue)s, priority = %(priority)s,
    max_attempts = %(max_attempts)s, timeout = %(timeout)s, next_run_at = %(next_run_at)s,
    updated_at = now()
WHERE name = %(name)s
RETURNING {SCHEDULE_COLUMNS}
"""
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = %(name)s RETURNING name"

# Due schedules (schedules_next_run_idx); read without a lock: FIRE_SCHEDULES decides.
DUE_SCHEDULES = """
SELECT name, cron, timezone, next_run_at FROM schedules
WHERE next_run_at <= %(now)s
ORDER BY next_run_at
LIMIT %(limit)s
"""
# Fire: move each schedule's next_run_at from the due time read to the next one, only if
# it still holds that due time (compare-and-set: a concurrent firer that got there first
# changed it, and this UPDATE, after waiting for its row lock, matches nothing), and
# insert one task per schedule moved, in the same statement (one commit). One
# notification while a worker waits.
FIRE_SCHEDULES = f"""
WITH d AS (
    SELECT * FROM unnest(%(names)s::text[], %(due)s::timestamptz[], %(next)s::timestamptz[])
        AS d(name, due, next)
), fired AS (
    UPDATE schedules s SET next_run_at = d.next, last_run_at = d.due, updated_at = now()
    FROM d
    WHERE s.name = d.name AND s.next_run_at = d.due
    RETURNING s.name, s.title, s.type, s.payload, s.queue, s.priority, s.max_attempts,
              s.timeout, d.due
), created AS (
    INSERT INTO tasks (title, type, payload, queue, priority, max_attempts, timeout, run_at,
                       schedule, request_id)
    SELECT title, type, payload, queue, priority, max_attempts, timeout, due, name,
           'schedule:' || name || '@' || to_char(due AT TIME ZONE 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    FROM fired
    RETURNING id
)
SELECT (SELECT count(*) FROM created)
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '')
    WHERE EXISTS (SELECT 1 FROM created) AND {WORKER_WAITING}
) AS n ON true
"""

# flowforge tasks stats: counts by queue and status, and how long the oldest due pending
# task of each queue has waited.
TASK_STATS = """
SELECT queue, status, count(*),
       extract(epoch FROM now() - min(run_at) FILTER (WHERE status = 'pending'
                                                      AND run_at <= now()))
FROM tasks GROUP BY queue, status ORDER BY queue, status
"""

# --- /v1/stats (the dashboard) -------------------------------------------------------------
# The minute now is in, on the server's clock: the throughput's minutes count back from it.
STATS_THIS_MINUTE = "SELECT date_trunc('minute', now())"
# Tasks finished per minute over the last %(minutes)s minutes, by outcome; walks the partial
# index on completed_at (tasks_finished_idx), however large the table.
STATS_THROUGHPUT = """
SELECT date_trunc('minute', completed_at) AS minute, status, count(*)
FROM tasks
WHERE completed_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
GROUP BY 1, 2
ORDER BY 1
"""
# The newest failures (tasks_status_created_idx, newest first), with why they failed.
STATS_RECENT_FAILURES = """
SELECT id, title, type, queue, attempts, max_attempts, last_error, completed_at
FROM tasks WHERE status = 'failed'
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
# Workers whose heartbeat is fresh (the registry, revision 0007).
STATS_LIVE_WORKERS = """
SELECT id, host, pid, version, queues, capacity, busy, isolation, started_at, heartbeat_at
FROM workers WHERE expires_at > now()
ORDER BY host, pid
"""

# --- migrations (migrations/env.py) ----------------------------------------------------------
# Two hosts running `flowforge migrate` at once take turns: the second waits, then finds
# nothing left to do. Transaction level: released at commit.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flowforge-migrate'))"

# Run by `flowforge migrate` as the owner: nobody else may write alembic_version (the
# deploy's default privileges give the runtime role writes on every table the owner makes).
REVOKE_VERSION_TABLE_WRITES = """
DO $$
DECLARE grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT grantee FROM information_schema.role_table_grants
        WHERE table_schema = current_schema() AND table_name = 'alembic_version'
          AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
          AND grantee <> current_user
    LOOP
        EXECUTE format(
            'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM %s',
            CASE WHEN grantee_name = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(grantee_name) END
        );
    END LOOP;
END $$
"""
