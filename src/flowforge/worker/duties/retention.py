"""Retention: delete finished tasks older than TASK_RETENTION, a bounded amount per pass.

Any worker may run it; the pruning lock in the statement itself (``ops_sql.PRUNE_FINISHED``)
lets only one delete at a time, and a worker that finds it taken skips its turn. A pass
deletes at most ``BATCHES`` x ``ops_sql.PRUNE_BATCH`` rows, each batch its own statement,
and then yields to the dispatcher's claims; while a backlog lasts (the last batch was
full) the next pass comes after ``BACKLOG_INTERVAL`` instead of ``INTERVAL``.
"""

from __future__ import annotations

import logging
from collections import Counter

from ...config import Settings, format_duration
from ...db import DatabaseRefused
from ...stores.ops_sql import PRUNE_BATCH
from ..metrics import NullMetrics
from ..queue import TaskQueue
from . import Duty

log = logging.getLogger("flowforge.worker")

INTERVAL = 60.0  # seconds between passes once caught up: an index probe that finds nothing
BACKLOG_INTERVAL = 1.0  # ... while old tasks remain (the last batch was full)
BATCHES = 3  # statements per pass: a few thousand rows, then the claims go on


class Retention(Duty):
    jitter = 0.2  # workers started together try the lock apart
    first = 1.0

    def __init__(self, settings: Settings, metrics: NullMetrics) -> None:
        self.retention = settings.task_retention
        self.metrics = metrics
        self.interval = INTERVAL
        self.refused_at: float | None = None  # when a refusal was last logged

    def run(self, queue: TaskQueue, now: float) -> None:
        try:
            deleted, backlog = self.prune(queue)
        except DatabaseRefused as exc:
            # Not the worker's own work: a refusal here must not stop claims (a raising
            # duty runs again at once, before every claim). Logged hourly.
            if self.refused_at is None or now - self.refused_at >= 3600:
                self.refused_at = now
                log.warning("retention: finished tasks not pruned: %s", exc)
            deleted, backlog = Counter(), False
        self.interval = BACKLOG_INTERVAL if backlog else INTERVAL
        if not deleted:
            return
        for status, count in deleted.items():
            self.metrics.tasks_pruned(status, count)
        total = deleted.total()
        log.info(
            "retention: pruned %d finished task%s older than %s",
            total,
            "" if total == 1 else "s",
            format_duration(self.retention),
            extra={"pruned": total, "pruned_by_status": dict(deleted)},
        )

    def prune(self, queue: TaskQueue) -> tuple[Counter[str], bool]:
        """Up to ``BATCHES`` batches; (deleted by status, whether old tasks remain)."""
        deleted: Counter[str] = Counter()
        cutoff = queue.age_cutoff(self.retention)
        for _ in range(BATCHES):
            led, counts = queue.prune_finished(cutoff, PRUNE_BATCH)
            if not led:  # another worker (or cleanup.py) prunes right now: its turn
                return deleted, False
            deleted.update(counts)
            if sum(counts.values()) < PRUNE_BATCH:
                return deleted, False
        return deleted, True
