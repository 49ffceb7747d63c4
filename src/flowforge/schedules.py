"""Schedules: periodic tasks from a cron expression in a time zone.

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
first one after *now*, not after the missed tick. The task's ``run_at`` is the due time
it stands for, its ``schedule`` the schedule's name.

Cron library: cronsim (healthchecks.io's), not croniter: no dependencies, strict parsing
(a bad field is an error, not a guess), DST handled as cron does (a time skipped by a
spring-forward runs once, a repeated one once), and kept small and maintained. Only
5-field expressions are accepted here (cronsim also takes a seconds field).
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cronsim import CronSim, CronSimError
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from . import queries
from .api.validation import (
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    PAGE_MAX,
    TITLE_MAX,
    TYPE_MAX,
    ValidationError,
    _attempts,
    _payload,
    _priority,
    _text,
    _timeout,
    _whole,
    queue_name,
)

log = logging.getLogger("flowforge.schedules")

# How often a worker looks for due schedules (seconds): a due time fires within this.
CHECK_INTERVAL = 1.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAME_RULE = "must be 1-100 characters of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
FIELDS = frozenset(
    {"name", "cron", "timezone", "title", "type", "payload", "queue", "priority",
     "max_attempts", "timeout"}
)  # fmt: skip

Execute = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]


@dataclass(slots=True)
class Schedule:
    """One row of ``schedules``, as the API shows it (column order = API field order)."""

    name: str
    cron: str
    timezone: str
    title: str
    type: str
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    timeout: int
    next_run_at: datetime
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime


SCHEDULE_COLUMNS: tuple[str, ...] = tuple(Schedule.__dataclass_fields__)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (``ValueError`` if this system does not know it)."""
    if name not in _zones() and name != "UTC":
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Riga)")
    return zoneinfo.ZoneInfo(name)


# Names in the zone database that are not a place: "localtime" is a link to the host's own
# zone (Debian ships it), so a schedule in it would fire at other hours on other hosts.
HOST_ZONES = frozenset({"localtime", "posixrules"})


def check_zone(name: str) -> str:
    """A time zone a schedule may be given: an IANA name this system knows, and not the
    host's own (``ValueError``). Rows already stored are read with ``zone`` alone."""
    if name in HOST_ZONES:
        raise ValueError(
            f"{name!r} is the host's own time zone, different on each host: "
            "name an IANA zone such as Europe/Riga (or UTC)"
        )
    zone(name)
    return name


def check_cron(expression: str) -> str:
    """A 5-field cron expression, normalized to single spaces (``ValueError`` if bad)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("must have 5 fields: minute hour day-of-month month day-of-week")
    text = " ".join(fields)
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, ValueError) as exc:
        raise ValueError(f"is not a valid cron expression: {exc}") from None
    return text


def next_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first time after ``after`` that ``cron`` matches in ``timezone``, in UTC."""
    start = after.astimezone(zone(timezone))
    return next(iter(CronSim(cron, start))).astimezone(UTC)


def schedule_body(
    body: Any, *, partial: bool, known_types: frozenset[str] | None = None
) -> dict[str, Any]:
    """Validate a POST (``partial=False``) or PUT body of /v1/schedules."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", {"body": "must be an object"})
    details = {name: "is not a known field" for name in body if name not in FIELDS}
    checks: dict[str, Callable[[Any], Any]] = {
        "name": _name,
        "cron": lambda v: check_cron(_text(v, maximum=200, blank_ok=False)),
        "timezone": lambda v: check_zone(_text(v, maximum=100, blank_ok=False)),
        "title": lambda v: _text(v, maximum=TITLE_MAX, blank_ok=False).strip(),
        "type": lambda v: _text(v, maximum=TYPE_MAX, blank_ok=False).strip(),
        "payload": _payload,
        "queue": queue_name,
        "priority": _priority,
        "max_attempts": _attempts,
        "timeout": _timeout,
    }
    clean: dict[str, Any] = {}
    for name, check in checks.items():
        if name not in body:
            continue
        try:
            clean[name] = check(body[name])
        except ValueError as exc:
            details[name] = str(exc)
    if not partial:
        for required in ("name", "cron", "title"):
            if required not in body:
                details[required] = "is required"
    elif not body:
        details["body"] = "must contain at least one field"
    if known_types is not None and "type" in clean and clean["type"] not in known_types:
        details["type"] = f"unknown task type; known: {', '.join(sorted(known_types))}"
    if details:
        raise ValidationError("the schedule is not valid", details)
    return clean


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValueError(NAME_RULE)
    return value


def valid_name(value: str) -> bool:
    return bool(NAME_PATTERN.fullmatch(value))  # `$` alone lets "a\n" through


def list_query(query: dict[str, str | None]) -> tuple[int, int]:
    """``page`` and ``limit`` of GET /v1/schedules; any other parameter is a 400."""
    details = {
        name: "is not a known parameter (known: limit, page)"
        for name in query
        if name not in ("page", "limit")
    }
    page, limit = 1, PAGE_LIMIT_DEFAULT
    try:
        page = _whole(query["page"], 1, PAGE_MAX) if "page" in query else 1
    except ValueError:
        details["page"] = f"must be a whole number from 1 to {PAGE_MAX}"
    try:
        limit = _whole(query["limit"], 1, PAGE_LIMIT_MAX) if "limit" in query else limit
    except ValueError:
        details["limit"] = f"must be a whole number from 1 to {PAGE_LIMIT_MAX}"
    if details:
        raise ValidationError("the query is not valid", details)
    return page, limit


def fire_due(execute: Execute, now: datetime, limit: int = 100) -> int:
    """Create the task of every schedule due at ``now``; returns how many were created.

    ``execute(sql, params)`` runs one statement and returns its rows (the worker passes
    its queue's, ``on(conn)`` makes one of a psycopg connection). ``now`` is a parameter
    so tests drive a clock of their own. Safe to run in any number of processes at once.
    """
    rows = execute(queries.DUE_SCHEDULES, {"now": now, "limit": limit})
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
    ((created,),) = execute(queries.FIRE_SCHEDULES, {"names": names, "due": due, "next": following})
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
    """The API's reads and writes of schedules, over the SQL in ``queries.py``."""

    def __init__(self, source: Any, *, default_max_attempts: int, default_timeout: int) -> None:
        self.source = source  # a db.ConnectionSource
        self.default_max_attempts = default_max_attempts
        self.default_timeout = default_timeout

    def _cursor(self, conn: Any) -> Any:
        return conn.cursor(row_factory=class_row(Schedule))

    def create(self, fields: dict[str, Any], now: datetime | None = None) -> Schedule:
        params = {
            "timezone": "UTC",
            "type": "noop",
            "payload": {},
            "queue": "default",
            "priority": 0,
            "max_attempts": self.default_max_attempts,
            "timeout": self.default_timeout,
            **fields,
        }
        params["next_run_at"] = next_after(
            params["cron"], params["timezone"], now or datetime.now(UTC)
        )
        params["payload"] = Jsonb(params["payload"])
        with self.source.connection() as conn:
            row = self._cursor(conn).execute(queries.INSERT_SCHEDULE, params).fetchone()
        if row is None:
            raise ScheduleExists(fields["name"])
        return row

    def get(self, name: str) -> Schedule | None:
        with self.source.connection() as conn:
            return self._cursor(conn).execute(queries.GET_SCHEDULE, {"name": name}).fetchone()

    def list(self, *, limit: int, offset: int) -> tuple[list[Schedule], int]:
        with self.source.connection() as conn:
            rows = self._cursor(conn).execute(
                queries.LIST_SCHEDULES, {"limit": limit, "offset": offset}
            )
            schedules = rows.fetchall()
            (total,) = conn.execute(queries.COUNT_SCHEDULES).fetchone()
        return schedules, total

    def update(
        self, name: str, changes: dict[str, Any], now: datetime | None = None
    ) -> Schedule | None:
        """Apply a PUT (only the fields sent); a new cron or time zone moves next_run_at."""
        with self.source.connection() as conn, conn.transaction():
            cur = self._cursor(conn)
            current = cur.execute(queries.GET_SCHEDULE_FOR_UPDATE, {"name": name}).fetchone()
            if current is None:
                return None
            params = {f: changes.get(f, getattr(current, f)) for f in SCHEDULE_COLUMNS}
            if params["cron"] != current.cron or params["timezone"] != current.timezone:
                params["next_run_at"] = next_after(
                    params["cron"], params["timezone"], now or datetime.now(UTC)
                )
            params["payload"] = Jsonb(params["payload"])
            return cur.execute(queries.UPDATE_SCHEDULE, params).fetchone()

    def delete(self, name: str) -> bool:
        with self.source.connection() as conn:
            return conn.execute(queries.DELETE_SCHEDULE, {"name": name}).fetchone() is not None
