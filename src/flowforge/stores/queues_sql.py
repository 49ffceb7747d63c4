"""The queues' SQL: their settings (QueueStore, the API's and `flowforge queues`') and the
claim of limited queues that the worker runs (flowforge.worker.queue)."""

from __future__ import annotations

from .common_sql import QUEUES_CHANNEL
from .queue_sql import CLAIM_CTE, CLAIMED_JSON

_SETTINGS_COLUMNS = "name, paused, paused_by, concurrency, rate_limit, rate_per, updated_at"
LIST_SETTINGS = f"SELECT {_SETTINGS_COLUMNS} FROM queue_settings ORDER BY name"
GET_SETTINGS = f"SELECT {_SETTINGS_COLUMNS} FROM queue_settings WHERE name = %(name)s"
GET_SETTINGS_FOR_UPDATE = GET_SETTINGS + " FOR UPDATE"
# A PUT: the whole row as merged by the store; a changed rate keeps the window's log (the
# starts already made count against the new limit), no rate clears it. Workers hear of
# it on QUEUES_CHANNEL (and read the settings every second anyway).
PUT_SETTINGS = f"""
WITH put AS (
    INSERT INTO queue_settings AS q (name, paused, paused_by, concurrency, rate_limit, rate_per)
    VALUES (%(name)s, %(paused)s, %(paused_by)s, %(concurrency)s, %(rate_limit)s,
            %(rate_per)s)
    ON CONFLICT (name) DO UPDATE SET
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

# The worker's view (read at start, on a notification and every second): the queues
# with a setting that changes how they are claimed. None: the claim is the plain one.
RESTRICTED_QUEUES = """
SELECT name, paused FROM queue_settings
WHERE paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL
ORDER BY name
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
SELECT name FROM queue_settings WHERE name = ANY(%(limited)s) AND NOT paused
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
        ORDER BY priority DESC, run_at, id
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
        q.rate_limit - (SELECT coalesce(sum(w.c), 0) FROM {_IN_WINDOW})) AS free
    FROM queue_settings q
    WHERE q.name = ANY(%(limited)s) AND NOT q.paused
), {CLAIM_CTE.format(due=_DUE_LIMITED)},
logged AS (
    UPDATE queue_settings q SET
        window_starts = ARRAY(SELECT w.t FROM {_IN_WINDOW} ORDER BY w.i)
                        || statement_timestamp(),
        window_counts = ARRAY(SELECT w.c FROM {_IN_WINDOW} ORDER BY w.i) || k.n::int
    FROM (SELECT queue, count(*) AS n FROM claimed GROUP BY queue) AS k
    WHERE q.name = k.queue AND q.rate_limit IS NOT NULL
)
SELECT {CLAIMED_JSON}, set_config('synchronous_commit', 'off', true) FROM claimed
"""
