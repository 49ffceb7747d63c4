"""Queue settings: read which queues are paused or limited (worker.limits), every second
and at once when a PUT notifies (the listener makes it due now)."""

from __future__ import annotations

import logging
from time import monotonic

from ...db import DatabaseRefused
from ..queue import TaskQueue
from . import Duty

log = logging.getLogger("flowforge.worker")

REFRESH_INTERVAL = 1.0  # seconds: a setting is seen this soon even without a notification


class QueueSettings(Duty):
    interval = REFRESH_INTERVAL
    warned = -3600.0

    def run(self, queue: TaskQueue, now: float) -> None:
        try:
            queue.refresh_limits()
        except DatabaseRefused as exc:  # a schema before queue_settings: nothing is limited
            if now - self.warned >= 3600:
                self.warned = now
                log.warning("queue settings not read: %s (is the schema migrated?)", exc)

    def now(self) -> None:
        """Run on the dispatcher's next turn (a setting changed)."""
        self.due = monotonic()
