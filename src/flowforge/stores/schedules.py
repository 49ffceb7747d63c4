"""Schedules in the database: the API's ScheduleStore, and the firing workers run.

A schedule row holds the task to create and ``next_run_at``, its next due time. Workers
call ``fire_due`` about once a second: it reads the due schedules (no lock), computes each
one's next time after *now* with cronsim, and then, in one statement, moves
``next_run_at`` forward **only if it still holds the due time it read** (compare-and-set)
and inserts a task for each schedule it moved. Two workers (on any hosts) that read the
same due time compute the same next time; the second one's UPDATE waits for the first's
row lock, re-reads the row, finds ``next_run_at`` changed and updates (and inserts)
nothing. So each due time creates exactly one task, and no lock is held beyond that one
statement.

After downtime a schedule that missed several ticks fires once: the next time is the
first one after *now*, not after the missed tick. A paused schedule does not fire at all,
and resuming it starts from the first due time after the resume (no missed tick runs).
The task's ``run_at`` is the due time it stands for, its ``schedule`` the schedule's name.
The rules (cron, time zone, the body) are ``flowforge.domain.schedules``'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSimError
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from ..domain.fields import SCHEDULE_FIELDS, defaults
from ..domain.schedules import SCHEDULE_COLUMNS, Schedule, next_after
from ..domain.tasks import Task
from .common_sql import NOTIFY_CHANNEL, WORKER_WAITING
from .task_types import task_row
from .tasks_sql import COLUMNS as TASK_COLUMNS_SQL

log = logging.getLogger("flowforge.schedules")

# How often a worker looks for due schedules (seconds): a due time fires within this.
CHECK_INTERVAL = 1.0

Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]

# --- SQL: /v1/schedules (ScheduleStore) and the firing that workers run (fire_due) ---
# (fire_due).
_COLUMNS_SQL = ", ".join(SCHEDULE_COLUMNS)
INSERT_SCHEDULE = f"""
INSERT INTO schedules (name, cron, timezone, title, type, payload, queue, priority,
                       max_attempts, timeout, paused, next_run_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(title)s, %(type)s, %(payload)s, %(queue)s,
        %(priority)s, %(max_attempts)s, %(timeout)s, %(paused)s, %(next_run_at)s)
ON CONFLICT (name) DO NOTHING
RETURNING {_COLUMNS_SQL}
"""
GET_SCHEDULE = f"SELECT {_COLUMNS_SQL} FROM schedules WHERE name = %(name)s"
GET_SCHEDULE_FOR_UPDATE = GET_SCHEDULE + " FOR UPDATE"
LIST_SCHEDULES = f"""
SELECT {_COLUMNS_SQL} FROM schedules ORDER BY name LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_SCHEDULES = "SELECT count(*) FROM schedules"
UPDATE_SCHEDULE = f"""
UPDATE schedules SET
    cron = %(cron)s, timezone = %(timezone)s, title = %(title)s, type = %(type)s,
    payload = %(payload)s, queue = %(queue)s, priority = %(priority)s,
    max_attempts = %(max_attempts)s, timeout = %(timeout)s, paused = %(paused)s,
    next_run_at = %(next_run_at)s, updated_at = now()
WHERE name = %(name)s
RETURNING {_COLUMNS_SQL}
"""
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = %(name)s RETURNING name"
# POST /v1/schedules/{name}/run: one task now, as the schedule would make it (run_at now,
# paused or not); next_run_at and last_run_at stay, so the cadence is unchanged. One
# notification while a worker waits, as for any created task.
RUN_SCHEDULE = f"""
WITH t AS (
    INSERT INTO tasks (title, type, payload, queue, priority, max_attempts, timeout, schedule,
                       request_id)
    SELECT title, type, payload, queue, priority, max_attempts, timeout, name, %(request_id)s
    FROM schedules WHERE name = %(name)s
    RETURNING {TASK_COLUMNS_SQL}
)
SELECT t.* FROM t LEFT JOIN LATERAL (
    SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}
) AS n ON true
"""

# Due schedules (schedules_next_run_idx); read without a lock: FIRE_SCHEDULES decides.
DUE_SCHEDULES = """
SELECT name, cron, timezone, next_run_at FROM schedules
WHERE next_run_at <= %(now)s AND NOT paused
ORDER BY next_run_at
LIMIT %(limit)s
"""
# Fire: move each schedule's next_run_at from the due time read to the next one, only if
# it still holds that due time and is not paused (compare-and-set: a concurrent firer that
# got there first changed it, or a PUT paused it, and this UPDATE, after waiting for its
# row lock, matches nothing), and
# insert one task per schedule moved, in the same statement (one commit). One
# notification while a worker waits.
FIRE_SCHEDULES = f"""
WITH d AS (
    SELECT * FROM unnest(%(names)s::text[], %(due)s::timestamptz[], %(next)s::timestamptz[])
        AS d(name, due, next)
), fired AS (
    UPDATE schedules s SET next_run_at = d.next, last_run_at = d.due, updated_at = now()
    FROM d
    WHERE s.name = d.name AND s.next_run_at = d.due AND NOT s.paused
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


def fire_due(execute: Execute, now: datetime, limit: int = 100) -> int:
    """Create the task of every schedule due at ``now``; returns how many were created.

    ``execute(sql, params)`` runs one statement and returns its rows (the worker passes
    its queue's, ``on(conn)`` makes one of a psycopg connection). ``now`` is a parameter
    so tests drive a clock of their own. Safe to run in any number of processes at once.
    """
    rows = execute(DUE_SCHEDULES, {"now": now, "limit": limit})
    names: list[str] = []
    due: list[datetime] = []
    following: list[datetime] = []
    for name, cron, timezone, next_run_at in rows:
        try:
            nxt = next_after(cron, timezone, max(now, next_run_at))
        except (ValueError, CronSimError, StopIteration) as exc:
            log.error("schedule %s cannot be computed: %s", name, exc, extra={"schedule": name})
            continue
        names.append(name)
        due.append(next_run_at)
        following.append(nxt)
    if not names:
        return 0
    ((created,),) = execute(FIRE_SCHEDULES, {"names": names, "due": due, "next": following})
    if created:
        log.info("schedules fired", extra={"tasks_created": created, "schedules_due": len(names)})
    return int(created)


def on(conn: Any) -> Execute:
    """``fire_due``'s ``execute`` over a psycopg connection (autocommit)."""

    def execute(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return conn.execute(sql, params).fetchall()

    return execute


class ScheduleExists(Exception):
    """POST of a name already taken (409)."""


class ScheduleStore:
    """The API's reads and writes of schedules, over the SQL in ``py``."""

    def __init__(self, source: Any, *, default_max_attempts: int, default_timeout: int) -> None:
        self.source = source  # a db.ConnectionSource
        self.default_max_attempts = default_max_attempts
        self.default_timeout = default_timeout

    def _cursor(self, conn: Any) -> Any:
        return conn.cursor(row_factory=class_row(Schedule))

    def create(self, fields: dict[str, Any], now: datetime | None = None) -> Schedule:
        params = {
            **defaults(SCHEDULE_FIELDS),  # timezone, type, payload, queue, priority
            "max_attempts": self.default_max_attempts,
            "timeout": self.default_timeout,
            **fields,
        }
        params["next_run_at"] = next_after(
            params["cron"], params["timezone"], now or datetime.now(UTC)
        )
        params["payload"] = Jsonb(params["payload"])
        with self.source.connection() as conn:
            row = self._cursor(conn).execute(INSERT_SCHEDULE, params).fetchone()
        if row is None:
            raise ScheduleExists(fields["name"])
        return row

    def get(self, name: str) -> Schedule | None:
        with self.source.connection() as conn:
            return self._cursor(conn).execute(GET_SCHEDULE, {"name": name}).fetchone()

    def list(self, *, limit: int, offset: int) -> tuple[list[Schedule], int]:
        with self.source.connection() as conn:
            rows = self._cursor(conn).execute(LIST_SCHEDULES, {"limit": limit, "offset": offset})
            schedules = rows.fetchall()
            (total,) = conn.execute(COUNT_SCHEDULES).fetchone()
        return schedules, total

    def update(
        self, name: str, changes: dict[str, Any], now: datetime | None = None
    ) -> Schedule | None:
        """Apply a PUT (only the fields sent); a new cron or time zone, or a resume (paused
        true to false), moves next_run_at to the first due time after now."""
        with self.source.connection() as conn, conn.transaction():
            cur = self._cursor(conn)
            current = cur.execute(GET_SCHEDULE_FOR_UPDATE, {"name": name}).fetchone()
            if current is None:
                return None
            params = {f: changes.get(f, getattr(current, f)) for f in SCHEDULE_COLUMNS}
            moved = params["cron"] != current.cron or params["timezone"] != current.timezone
            # Resumed: from the first due time after now, never the ticks missed meanwhile.
            if moved or (current.paused and not params["paused"]):
                params["next_run_at"] = next_after(
                    params["cron"], params["timezone"], now or datetime.now(UTC)
                )
            params["payload"] = Jsonb(params["payload"])
            return cur.execute(UPDATE_SCHEDULE, params).fetchone()

    def run(self, name: str, *, request_id: str | None) -> Task | None:
        """One task from the schedule now (``RUN_SCHEDULE``); None: no such schedule."""
        with self.source.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            return cur.execute(RUN_SCHEDULE, {"name": name, "request_id": request_id}).fetchone()

    def delete(self, name: str) -> bool:
        with self.source.connection() as conn:
            return conn.execute(DELETE_SCHEDULE, {"name": name}).fetchone() is not None
