"""Queues as objects: their settings (queue_settings) with their tasks' counts; the API's
``/v1/queues`` and ``flowforge queues`` read and change them here, over queues_sql.py.

A queue is listed when it has tasks or settings. The counts are ``stats.queue_metrics``'
(exact up to a cap per status, estimated above it, as /metrics), so a listing costs what
a scrape costs however large the table.
"""

from __future__ import annotations

from typing import Any

from ..db import ConnectionSource
from ..domain.queues import BREAKER, OPERATOR, Queue
from ..domain.states import STATUSES
from . import queues_sql, stats

# Every statement of a listing is cut off after this long (as /metrics' scrape).
LIST_TIMEOUT_MS = 5_000


def _number(value: float) -> float | int:
    """Seconds as they were sent: 1, not 1.0 (the column is a float)."""
    return int(value) if float(value).is_integer() else value


def _rate(limit: int | None, per: float | None) -> dict[str, Any] | None:
    if limit is None or per is None:
        return None
    return {"limit": limit, "per": _number(per)}


def _breaker(failures: int | None, window: float | None, cooldown: float | None) -> Any:
    if failures is None or window is None or cooldown is None:
        return None
    return {"failures": failures, "window": _number(window), "cooldown": _number(cooldown)}


class QueueStore:
    """Queue settings and listings over a ``db.ConnectionSource``."""

    def __init__(self, source: ConnectionSource, *, timeout_ms: int = LIST_TIMEOUT_MS) -> None:
        self.source = source
        self.timeout_ms = timeout_ms

    def list(self) -> list[Queue]:
        """Every queue with tasks or settings, by name."""
        metrics = stats.queue_metrics(self.source, self.timeout_ms)
        with self.source.connection() as conn:
            rows = conn.execute(queues_sql.LIST_SETTINGS).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for queue, status, n in metrics.counts:
            counts.setdefault(queue, dict.fromkeys(STATUSES, 0))[status] = n
        oldest = dict(metrics.oldest_pending)
        settings = {row[0]: row for row in rows}
        return [
            self._queue(name, settings.get(name), counts, oldest)
            for name in sorted(set(counts) | set(settings))
        ]

    def get(self, name: str) -> Queue | None:
        """One queue (None: it has neither tasks nor settings)."""
        return next((q for q in self.list() if q.name == name), None)

    @staticmethod
    def _queue(
        name: str,
        row: tuple[Any, ...] | None,
        counts: dict[str, dict[str, int]],
        oldest: dict[str, float],
    ) -> Queue:
        tasks = counts.get(name, dict.fromkeys(STATUSES, 0))
        age = oldest.get(name)
        if row is None:
            return Queue(name, False, None, None, None, None, tasks, age, None)
        _, paused, paused_by, concurrency, limit, per, updated_at, *breaker = row
        return Queue(
            name, paused, paused_by, concurrency, _rate(limit, per), _breaker(*breaker), tasks,
            age, updated_at,
        )  # fmt: skip

    def put(self, name: str, changes: dict[str, Any]) -> None:
        """Set the settings sent (``domain.queues.settings_body``), keep the others, and tell
        the workers. Pausing makes the operator its pauser, resuming clears it."""
        with self.source.connection() as conn, conn.transaction():
            current = conn.execute(queues_sql.GET_SETTINGS_FOR_UPDATE, {"name": name}).fetchone()
            _, paused, paused_by, concurrency, limit, per, _, *breaker = current or (
                name, False, None, None, None, None, None, None, None, None,
            )  # fmt: skip
            if "paused" in changes:
                paused = changes["paused"]
                paused_by = OPERATOR if paused else None
            concurrency = changes.get("concurrency", concurrency)
            if "rate" in changes:
                rate = changes["rate"] or {}
                limit, per = rate.get("limit"), rate.get("per")
            if "breaker" in changes:
                given = changes["breaker"] or {}
                breaker = [given.get(k) for k in ("failures", "window", "cooldown")]
                if not given and paused_by == BREAKER:  # no breaker: its pause ends too
                    paused, paused_by = False, None
            conn.execute(
                queues_sql.PUT_SETTINGS,
                {
                    "name": name,
                    "paused": paused,
                    "paused_by": paused_by,
                    "concurrency": concurrency,
                    "rate_limit": limit,
                    "rate_per": per,
                    "breaker_failures": breaker[0],
                    "breaker_window": breaker[1],
                    "breaker_cooldown": breaker[2],
                },
            )
