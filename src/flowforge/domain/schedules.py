"""A schedule's rules: its fields (``fields.SCHEDULE_FIELDS``), a 5-field cron expression
in an IANA time zone, and the Schedule row. How schedules fire is the store's
(``flowforge.stores.schedules``).

Cron library: cronsim (healthchecks.io's), not croniter: no dependencies, strict parsing
(a bad field is an error, not a guess), DST handled as cron does (a time skipped by a
spring-forward runs once, a repeated one once), and kept small and maintained. Only
5-field expressions are accepted here (cronsim also takes a seconds field).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cronsim import CronSim, CronSimError

from .fields import SCHEDULE_FIELDS, SCHEDULE_NAME_REGEX
from .validation import (
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    PAGE_MAX,
    BodyRules,
    ValidationError,
    _whole,
    checks_of,
)

NAME_PATTERN = re.compile(SCHEDULE_NAME_REGEX)
FIELDS = frozenset(SCHEDULE_FIELDS)
_REQUIRED = tuple(name for name, f in SCHEDULE_FIELDS.items() if f.required)


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
    paused: bool
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


def _checks() -> dict[str, Callable[[Any], Any]]:
    """The table's checks, cron and time zone checked further (cronsim, zoneinfo)."""
    checks = checks_of(SCHEDULE_FIELDS)
    text_cron, text_zone = checks["cron"], checks["timezone"]
    checks["cron"] = lambda v: check_cron(text_cron(v))
    checks["timezone"] = lambda v: check_zone(text_zone(v))
    return checks


_CHECKS = _checks()
_BODY = BodyRules("schedule", _CHECKS, FIELDS, FIELDS, _REQUIRED, "must contain at least one field")
# Validate a POST (``partial=False``) or PUT body of /v1/schedules (``declared``: as a new
# task's, validation.task_body).
schedule_body = _BODY.check
