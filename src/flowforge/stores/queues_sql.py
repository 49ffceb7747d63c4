"""The queues' SQL: their settings (QueueStore, the API's and `flowforge queues`') and the
claim of limited queues that the worker runs (flowforge.worker.queue)."""

from __future__ import annotations

from .common_sql import QUEUES_CHANNEL
from .queue_sql import CLAIM_CTE, CLAIMED_JSON

_SETTINGS_COLUMNS = (
    "name, paused, paused_by, concurrency, rate_limit, rate_per, updated_at, "
    "breaker_failures, breaker_window, breaker_cooldown"
)
LIST_SETTINGS = f"SELECT {_SETTINGS_COLUMNS} FROM queue_settings ORDER BY name"
GET_SETTINGS = f"SELECT {_SETTINGS_COLUMNS} FROM queue_settings WHERE name = %(name)s"
GET_SETTINGS_FOR_UPDATE = GET_SETTINGS + " FOR UPDATE"
# A PUT: the whole row as merged by the store; a changed rate keeps the window's log (the
# starts already made count against the new limit), no rate clears it. A change of who
# paused it (a resume, say) or no breaker ends a trip and clears the failure log. Workers
# hear of it on QUEUES_CHANNEL (and read the settings every second anyway).
PUT_SETTINGS = f"""
WITH put AS (
    INSERT INTO queue_settings AS q (name, paused, paused_by, concurrency, rate_limit, rate_per,
                                     breaker_failures, breaker_window, breaker_cooldown)
    VALUES (%(name)s, %(paused)s, %(paused_by)s, %(concurrency)s, %(rate_limit)s,
            %(rate_per)s, %(breaker_failures)s, %(breaker_window)s, %(breaker_cooldown)s)
    ON CONFLICT (name) DO UPDATE SET
        breaker_failures = excluded.breaker_failures,
        breaker_window = excluded.breaker_window,
        breaker_cooldown = excluded.breaker_cooldown,
        failures = CASE WHEN excluded.breaker_failures IS NULL
                          OR excluded.paused_by IS DISTINCT FROM q.paused_by
                        THEN '{{}}' ELSE q.failures END,
        tripped_at = CASE WHEN excluded.paused_by = 'breaker' THEN q.tripped_at END,
        probe_task = CASE WHEN excluded.paused_by = 'breaker' THEN q.probe_task END,
        paused = excluded.paused, paused_by = excluded.paused_by,
        concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
        rate_per = excluded.rate_per,
        window_starts = CASE WHEN excluded.rate_limit IS NULL THEN '{{}}'
                             ELSE q.window_starts END,
        window_counts = CASE WHEN excluded.rate_limit IS NULL THEN '{{}}'
                             ELSE q.window_counts END,
        updated_at = now()
    RETURNING {_SETTINGS_COLUMNS}
)
SELECT put.*, pg_notify('{QUEUES_CHANNEL}', put.name) FROM put
"""

# A queue its breaker paused whose cooldown is over and whose probe is not running (none
# was let through yet, or it went back to pending): one task may be claimed.
_PROBE_DUE = """(q.paused_by = 'breaker'
     AND q.tripped_at + make_interval(secs => q.breaker_cooldown) <= statement_timestamp()
     AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = q.probe_task
                                              AND t.status = 'processing'))"""
# The worker's view (read at start, on a notification and every second): the queues
# with a setting that changes how they are claimed or whose failures it must report.
# None: the claim is the plain one (a breaker alone changes no claim). With each, its
# pending tasks counted up to %(cap)s (worker.limits: whether the others' claim should
# step around them; a walk of tasks_queue_claim_idx).
RESTRICTED_QUEUES = f"""
SELECT q.name, q.paused, q.concurrency IS NOT NULL OR q.rate_limit IS NOT NULL,
       q.breaker_failures IS NOT NULL, {_PROBE_DUE},
       (SELECT count(*) FROM (SELECT 1 FROM tasks t WHERE t.status = 'pending'
                              AND t.queue = q.name LIMIT %(cap)s) AS b)
FROM queue_settings q
WHERE q.paused OR q.concurrency IS NOT NULL OR q.rate_limit IS NOT NULL
   OR q.breaker_failures IS NOT NULL
ORDER BY q.name
"""

# The claim of limited queues (concurrency or rate), a transaction of two statements:
# LOCK_LIMITED takes the queues' settings rows (FOR UPDATE, in name order: no deadlock),
# so the claimers of one limited queue take turns, and claimers of other queues never
# wait. CLAIM_LIMITED then runs with a snapshot taken after the lock was granted (READ
# COMMITTED: per statement), so it sees every claim the previous holder committed; in
# the locking statement itself it would not. It counts each queue's running tasks (a
# walk of the processing rows, bounded by the workers' capacity) and the starts in its
# rate window (the window log, migration 0013), claims at most what both leave (and
# %(limit)s in all), and logs its starts. Finishing tasks never takes the lock: a finish
# only frees room, and a count that misses it claims less, never more.
LOCK_LIMITED = """
SELECT name FROM queue_settings
WHERE name = ANY(%(limited)s) AND (NOT paused OR paused_by = 'breaker')
ORDER BY name FOR UPDATE
"""
# The window log's entries still inside the window (of the settings row ``q``).
_IN_WINDOW = """unnest(q.window_starts, q.window_counts) WITH ORDINALITY AS w(t, c, i)
     WHERE w.t > statement_timestamp() - make_interval(secs => q.rate_per)"""
_DUE_LIMITED = """
    SELECT c.id FROM room CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM tasks
        WHERE status = 'pending' AND queue = room.name AND run_at <= now()
          AND attempts < max_attempts
        ORDER BY -priority, run_at, id  -- tasks_queue_claim_idx's order (revision 0017)
        LIMIT greatest(room.free, 0)
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT %(limit)s"""
CLAIM_LIMITED = f"""
WITH running AS MATERIALIZED (
    SELECT queue, count(*) AS n FROM tasks WHERE status = 'processing' GROUP BY queue
), room AS MATERIALIZED (
    -- least() ignores NULLs: an unset limit leaves no bound
    SELECT q.name, least(
        %(limit)s,
        q.concurrency - coalesce((SELECT r.n FROM running r WHERE r.queue = q.name), 0),
        q.rate_limit - (SELECT coalesce(sum(w.c), 0) FROM {_IN_WINDOW}),
        CASE WHEN q.paused THEN CASE WHEN {_PROBE_DUE} THEN 1 ELSE 0 END END) AS free
    FROM queue_settings q
    WHERE q.name = ANY(%(limited)s) AND (NOT q.paused OR q.paused_by = 'breaker')
), {CLAIM_CTE.format(due=_DUE_LIMITED)},
logged AS (
    UPDATE queue_settings q SET
        window_starts = CASE WHEN q.rate_limit IS NULL THEN q.window_starts
                             ELSE ARRAY(SELECT w.t FROM {_IN_WINDOW} ORDER BY w.i)
                                  || statement_timestamp() END,
        window_counts = CASE WHEN q.rate_limit IS NULL THEN q.window_counts
                             ELSE ARRAY(SELECT w.c FROM {_IN_WINDOW} ORDER BY w.i)
                                  || k.n::int END,
        probe_task = CASE WHEN q.paused THEN k.first ELSE q.probe_task END
    FROM (SELECT queue, count(*) AS n, min(id) AS first FROM claimed GROUP BY queue) AS k
    WHERE q.name = k.queue AND (q.rate_limit IS NOT NULL OR q.paused)
)
SELECT {CLAIMED_JSON}, set_config('synchronous_commit', 'off', true) FROM claimed
"""

# The circuit breaker (migration 0016), run by the worker that records outcomes of breaker
# queues: failed attempts (``failed``) and, for a tripped queue, its probe's outcome. A
# transaction: LOCK_BREAKERS takes the rows (name order), so concurrent reports add up;
# BREAKER_OUTCOMES then appends the failures to the window's log and trips the queue
# (paused by 'breaker') when the log holds ``breaker_failures``; the probe's success
# resumes the queue, its failure starts another cooldown. Changes are notified.
LOCK_BREAKERS = """
SELECT name FROM queue_settings WHERE name = ANY(%(queues)s) ORDER BY name FOR UPDATE
"""
BREAKER_OUTCOMES = f"""
WITH o AS (
    SELECT * FROM unnest(%(queues)s::text[], %(ids)s::bigint[], %(failed)s::bool[])
        AS o(queue, id, failed)
), s AS (
    SELECT q.name,
           coalesce(bool_or(o.id = q.probe_task AND NOT o.failed), false) AS probe_ok,
           coalesce(bool_or(o.id = q.probe_task AND o.failed), false) AS probe_failed,
           (count(*) FILTER (WHERE o.failed AND o.id IS DISTINCT FROM q.probe_task))::int AS n
    FROM queue_settings q JOIN o ON o.queue = q.name
    WHERE q.breaker_failures IS NOT NULL
    GROUP BY q.name
), p AS (
    SELECT s.*, l.log, NOT q.paused AND cardinality(l.log) >= q.breaker_failures AS trips
    FROM s JOIN queue_settings q ON q.name = s.name
    CROSS JOIN LATERAL (
        SELECT ARRAY(SELECT t FROM unnest(q.failures) AS t
                     WHERE t > statement_timestamp() - make_interval(secs => q.breaker_window)
                     ORDER BY t)
               || array_fill(statement_timestamp(), ARRAY[s.n]) AS log
    ) AS l
), changed AS (
    UPDATE queue_settings q SET
        paused = CASE WHEN p.probe_ok THEN false WHEN p.trips THEN true ELSE q.paused END,
        paused_by = CASE WHEN p.probe_ok THEN NULL WHEN p.trips THEN 'breaker'
                         ELSE q.paused_by END,
        tripped_at = CASE WHEN p.probe_ok THEN NULL
                          WHEN p.trips OR p.probe_failed THEN statement_timestamp()
                          ELSE q.tripped_at END,
        probe_task = CASE WHEN p.probe_ok OR p.probe_failed THEN NULL ELSE q.probe_task END,
        failures = CASE WHEN p.probe_ok OR p.trips THEN '{{}}'
                        ELSE p.log[greatest(1, cardinality(p.log) - q.breaker_failures + 1):]
                   END,
        updated_at = CASE WHEN p.probe_ok OR p.trips THEN now() ELSE q.updated_at END
    FROM p
    WHERE q.name = p.name
    RETURNING q.name, p.trips, p.probe_ok, p.probe_failed, q.breaker_failures, q.breaker_window
)
SELECT c.*, CASE WHEN c.trips OR c.probe_ok THEN pg_notify('{QUEUES_CHANNEL}', c.name) END
FROM changed c
"""
