"""A queue's settings (``PUT /v1/queues/{name}``): what may be set, within which limits,
and the check of a body, per field as ``validation.py`` reports a task's.

A queue exists as long as it has tasks or settings; settings are ``paused``,
``concurrency`` (tasks running at once across all workers; None: unlimited) and ``rate``
(at most ``limit`` tasks started per ``per`` seconds across all workers; None: unlimited).
The worker's claim enforces them (``stores.queue_sql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .validation import ValidationError, queue_name

CONCURRENCY_MAX = 100_000
RATE_LIMIT_MAX = 100_000  # tasks per window (the window's log holds at most this many)
RATE_PER_MIN, RATE_PER_MAX = 0.001, 86_400  # seconds (a millisecond, one day)
# Who paused a queue (queue_settings.paused_by): an operator (PUT, the CLI) or the breaker.
OPERATOR, BREAKER = "operator", "breaker"
PAUSED_BY = (OPERATOR, BREAKER)
BREAKER_FAILURES_MAX = 10_000  # failed attempts in the window (the window's log holds them)
QUEUE_SETTINGS = ("paused", "concurrency", "rate", "breaker")


@dataclass(slots=True)
class Queue:
    """A queue as the API shows it: its settings and its tasks."""

    name: str
    paused: bool
    paused_by: str | None
    concurrency: int | None
    rate: dict[str, Any] | None  # {"limit": N, "per": seconds}
    breaker: dict[str, Any] | None  # {"failures": N, "window": seconds, "cooldown": seconds}
    counts: dict[str, int]  # tasks by status (estimated above a cap, as /metrics)
    oldest_pending_age_seconds: float | None  # the oldest due pending task's wait
    updated_at: datetime | None  # when the settings last changed (None: never set)


def _paused(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _concurrency(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CONCURRENCY_MAX:
        raise ValueError(f"must be null (unlimited) or a whole number from 1 to {CONCURRENCY_MAX}")
    return value


def _rate(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    rule = (
        f'must be null (unlimited) or {{"limit": N, "per": seconds}} with N a whole number '
        f"from 1 to {RATE_LIMIT_MAX} and seconds a number from {RATE_PER_MIN} to {RATE_PER_MAX}"
    )
    if not isinstance(value, dict) or set(value) != {"limit", "per"}:
        raise ValueError(rule)
    limit, per = value["limit"], value["per"]
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= RATE_LIMIT_MAX:
        raise ValueError(rule)
    if (
        isinstance(per, bool)
        or not isinstance(per, int | float)
        or not RATE_PER_MIN <= per <= RATE_PER_MAX
    ):
        raise ValueError(rule)
    return {"limit": limit, "per": per}


def _seconds(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and RATE_PER_MIN <= value <= RATE_PER_MAX
    )


def _breaker(value: Any) -> dict[str, Any] | None:
    """The circuit breaker: ``failures`` failed attempts within ``window`` seconds pause the
    queue; after ``cooldown`` seconds one probe task runs, and its success resumes it."""
    if value is None:
        return None
    rule = (
        f'must be null (off) or {{"failures": N, "window": seconds, "cooldown": seconds}} '
        f"with N a whole number from 1 to {BREAKER_FAILURES_MAX} and the seconds numbers "
        f"from {RATE_PER_MIN} to {RATE_PER_MAX}"
    )
    if not isinstance(value, dict) or set(value) != {"failures", "window", "cooldown"}:
        raise ValueError(rule)
    failures = value["failures"]
    if isinstance(failures, bool) or not isinstance(failures, int):
        raise ValueError(rule)
    if not 1 <= failures <= BREAKER_FAILURES_MAX or not all(
        _seconds(value[k]) for k in ("window", "cooldown")
    ):
        raise ValueError(rule)
    return {"failures": failures, "window": value["window"], "cooldown": value["cooldown"]}


_CHECKS = {"paused": _paused, "concurrency": _concurrency, "rate": _rate, "breaker": _breaker}


def settings_body(body: Any) -> dict[str, Any]:
    """A PUT body checked: the settings sent (at least one), cleaned."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", {"body": "must be an object"})
    details = {name: "is not a known field" for name in body if name not in _CHECKS}
    clean: dict[str, Any] = {}
    for name, check in _CHECKS.items():
        if name in body:
            try:
                clean[name] = check(body[name])
            except ValueError as exc:
                details[name] = str(exc)
    if not body:
        details["body"] = f"must contain at least one of {', '.join(QUEUE_SETTINGS)}"
    if details:
        raise ValidationError("the queue settings are not valid", details)
    return clean


def checked_name(name: str) -> str:
    """A queue name from a path, or a ValidationError naming it."""
    try:
        return queue_name(name)
    except ValueError as exc:
        raise ValidationError("the queue name is not valid", {"name": str(exc)}) from None
