"""The worker queue's SQL (flowforge.worker.queue.TaskQueue runs it over its connection)."""

from __future__ import annotations

from .attempts_sql import appended, last_attempt, room_for_one
from .common_sql import NOTIFY_CHANNEL

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
# `kind` what the worker knows of how it ended beyond the error: 'snoozed' (the handler
# raised Snooze: back to pending after `delay`, the attempt not counted), 'discarded'
# (Discard: failed now, whatever attempts are left), 'timed_out', 'crashed' (the child
# died), NULL; the history entry's outcome follows from it and the row.
_FINISHED_OUTCOME = """CASE WHEN t.cancel_requested THEN 'cancelled'
            WHEN d.kind IN ('snoozed', 'discarded') THEN d.kind
            WHEN d.error IS NULL THEN 'completed'
            WHEN d.kind IS NOT NULL THEN d.kind
            WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'retried' END"""
_FINISHED_ERROR = "CASE WHEN t.cancel_requested THEN coalesce(d.note, d.error) ELSE d.error END"
_FINISHED_ENTRY = appended(
    _FINISHED_OUTCOME, _FINISHED_ERROR, "d.traceback, d.cpu, d.rss, d.signal"
)
# The outcome ends the task (the status below is not 'pending'): its attempt goes to the
# last_attempt_* columns (attempts_sql says why), any other to the log.
_ENDS = """(t.cancel_requested OR (d.kind IS DISTINCT FROM 'snoozed' AND (
            d.error IS NULL OR d.kind IS NOT DISTINCT FROM 'discarded'
            OR t.attempts >= t.max_attempts)))"""
_LAST_ATTEMPT = last_attempt(
    _ENDS,
    {
        "outcome": _FINISHED_OUTCOME,
        "error": _FINISHED_ERROR,
        "traceback": "d.traceback",
        "cpu_seconds": "d.cpu",
        "max_rss_bytes": "d.rss",
        "exit_signal": "d.signal",
    },
)
_FINISH_CTE = f"""
finished AS (
    UPDATE tasks t SET
        status = CASE WHEN t.cancel_requested THEN 'cancelled'
                      WHEN d.kind = 'snoozed' THEN 'pending'
                      WHEN d.error IS NULL THEN 'completed'
                      WHEN d.kind = 'discarded' OR t.attempts >= t.max_attempts THEN 'failed'
                      ELSE 'pending' END,
        completed_at = CASE WHEN t.cancel_requested THEN now()
                            WHEN d.kind = 'snoozed' THEN NULL
                            WHEN d.error IS NULL OR d.kind = 'discarded'
                                 OR t.attempts >= t.max_attempts
                            THEN now() END,
        run_at = CASE WHEN NOT t.cancel_requested AND (d.kind = 'snoozed' OR (
                           d.error IS NOT NULL AND d.kind IS DISTINCT FROM 'discarded'
                           AND t.attempts < t.max_attempts))
                      THEN now() + make_interval(secs => d.delay) ELSE t.run_at END,
        -- a snooze does not count: the attempt is given back (its entry stays)
        attempts = CASE WHEN d.kind = 'snoozed' AND NOT t.cancel_requested
                        THEN t.attempts - 1 ELSE t.attempts END,
        last_error = CASE
            WHEN t.cancel_requested THEN coalesce(d.note, CASE
                WHEN d.error IS NULL THEN 'cancelled by request while it ran (the handler '
                                          'finished before it saw the request)'
                ELSE 'cancelled by request while it ran; the run failed meanwhile: '
                     || d.error END)
            ELSE coalesce(d.error, t.last_error) END,
        result = CASE WHEN d.error IS NULL THEN d.result::jsonb END,
        attempt_log = CASE WHEN {_ENDS} THEN {room_for_one()} ELSE {_FINISHED_ENTRY} END,
        {_LAST_ATTEMPT},
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(errors)s::text[],
                %(delays)s::float8[], %(results)s::text[], %(notes)s::text[],
                %(kinds)s::text[], %(tracebacks)s::text[], %(cpus)b::float8[],
                %(rsss)b::bigint[], %(signals)s::int[])
         AS d(id, token, error, delay, result, note, kind, traceback, cpu, rss, signal)
    WHERE t.id = d.id AND t.lease_token = d.token AND t.status = 'processing'
    RETURNING t.id, t.status
)"""

# Due pending tasks, highest priority first, FIFO by run_at then id within a priority,
# skipping rows another worker is claiming right now. One new fencing token per claim.
# Rows whose attempts are used up are left to the reaper (the CHECK would refuse a run).
# From any queue: one ordered scan of tasks_priority_claim_idx.
_DUE_ANY = """
    SELECT id FROM tasks
    WHERE status = 'pending' AND run_at <= now() AND attempts < max_attempts{unrestricted}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED"""
_DUE_ANY_QUEUE = _DUE_ANY.format(unrestricted="")
# From any queue but those with settings (paused or limited: each has its own claim,
# queues_sql.CLAIM_LIMITED). Only while some queue has settings: else the plain one.
_DUE_UNRESTRICTED = _DUE_ANY.format(unrestricted="\n      AND queue <> ALL(%(restricted)s)")
# From named queues: one ordered scan of tasks_queue_claim_idx per queue, merged. (A
# single scan with queue = ANY(...) cannot return rows in priority order: it would sort
# every due row of those queues.) Rows locked beyond the limit are released at commit.
_DUE_NAMED = """
    SELECT c.id FROM {source} AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM tasks
        WHERE status = 'pending' AND queue = q.name AND run_at <= now()
          AND attempts < max_attempts
        ORDER BY -priority, run_at, id  -- tasks_queue_claim_idx's order (revision 0017)
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s"""
_DUE_NAMED_QUEUES = _DUE_NAMED.format(source="unnest(%(queues)s::text[])")
# While restricted queues hold a backlog (paused ones, say), the scan of every queue but
# them would step over all of it on every claim (a paused queue's 50,000 tasks made a
# claim of 50 four times slower here). Instead: the queues with pending tasks, found by
# a loose scan of tasks_queue_claim_idx (one descent per queue, skipping each queue's
# rows), less the restricted ones, each claimed by its own ordered scan and merged.
_PENDING_QUEUES = """RECURSIVE pending_queues(name) AS (
    (SELECT queue FROM tasks WHERE status = 'pending' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM tasks t WHERE t.status = 'pending' AND t.queue > p.name
            ORDER BY t.queue LIMIT 1)
    FROM pending_queues p WHERE p.name IS NOT NULL
),"""
_DUE_PENDING_QUEUES = _DUE_NAMED.format(
    source="(SELECT p.name FROM pending_queues p\n"
    "          WHERE p.name IS NOT NULL AND p.name <> ALL(%(restricted)s))"
)

CLAIM_CTE = """
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


CLAIMED_JSON = """coalesce(json_agg(json_build_array(id, type, payload, attempts, max_attempts,
                                                  request_id, waited, queue, timeout)
                                 ORDER BY priority DESC, run_at, id),
                        '[]')"""


def finish_and_claim(named_queues: bool, restricted: bool = False, skipping: bool = False) -> str:
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
    any_queue = _DUE_UNRESTRICTED if restricted else _DUE_ANY_QUEUE
    due = _DUE_PENDING_QUEUES if skipping else _DUE_NAMED_QUEUES if named_queues else any_queue
    claim = CLAIM_CTE.format(due=due)
    return f"""
WITH {_PENDING_QUEUES if skipping else ""}{_FINISH_CTE},
{claim}
SELECT (SELECT coalesce(array_agg(id), '{{}}') FROM finished) AS finished,
       (SELECT coalesce(array_agg(id), '{{}}') FROM finished WHERE status = 'cancelled')
           AS cancelled,
       (SELECT {CLAIMED_JSON}
        FROM claimed) AS claimed,
       CASE WHEN cardinality(%(ids)s::bigint[]) = 0
            THEN set_config('synchronous_commit', 'off', true) END AS claim_only
"""


FINISH_AND_CLAIM = finish_and_claim(False)
FINISH_AND_CLAIM_QUEUES = finish_and_claim(True)
# While some queue has settings (a worker of every queue; one of named queues is given
# the unrestricted ones among them and runs FINISH_AND_CLAIM_QUEUES). The limited
# queues' own claim is queues_sql.CLAIM_LIMITED.
FINISH_AND_CLAIM_UNRESTRICTED = finish_and_claim(False, restricted=True)
FINISH_AND_CLAIM_SKIPPING = finish_and_claim(False, restricted=True, skipping=True)


# When nothing is due: when the next pending task becomes due (a retry's backoff), so an
# idle worker wakes up for it instead of waiting for the next poll.
NEXT_RUN_AT = """
SELECT extract(epoch FROM min(run_at) - now()) FROM tasks WHERE status = 'pending'
"""
# ... of a queue not paused, while some are.
NEXT_RUN_AT_UNPAUSED = """
SELECT extract(epoch FROM min(run_at) - now()) FROM tasks
WHERE status = 'pending' AND queue <> ALL(%(paused)s)
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
_GIVEN_BACK_ENTRY = appended(
    """CASE WHEN t.cancel_requested THEN 'cancelled'
            WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'retried' END""",
    "%(reason)s::text",
)
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
        attempt_log = CASE WHEN d.started THEN {_GIVEN_BACK_ENTRY} ELSE t.attempt_log END,
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
_REAPED_ENTRY = appended(
    "'lease_lost'",
    "format('lease expired: worker %%s stopped heartbeating (killed, hung or crashed "
    "while running it)', coalesce(t.worker, '?'))",
)
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
        attempt_log = {_REAPED_ENTRY},
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
