"""Schedules: fire the due ones (flowforge.stores.schedules); a task fired means a claim."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ...stores import schedules
from ..queue import TaskQueue
from . import Duty


class Schedules(Duty):
    interval = schedules.CHECK_INTERVAL

    def __init__(self, on_fired: Callable[[], None]) -> None:
        """``on_fired``: at least one task was created (the dispatcher claims)."""
        self.on_fired = on_fired

    def run(self, queue: TaskQueue, now: float) -> None:
        # The dispatcher's flag is set here, not `notified |= fired`: that would read the
        # flag before this round trip and write it back after, erasing a NOTIFY the
        # listener flagged meanwhile (the task then waited for the next poll).
        if queue.fire_schedules(datetime.now(UTC)) > 0:
            self.on_fired()
