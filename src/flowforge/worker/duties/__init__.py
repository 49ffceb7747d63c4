"""The dispatcher's maintenance duties, each a small class of its own run the same way:
``Duties`` runs each one between batches when it is due, then sets when it is due next.

- ``heartbeat``: extend the leases this worker holds and refresh its registry row (and
  learn of cancellations the listener missed)
- ``reaper``: give back (or fail) tasks whose lease expired, anyone's
- ``schedules``: fire due schedules
- ``retention``: delete finished tasks older than TASK_RETENTION (one worker at a time)

A duty is a ``Duty``: ``interval`` (seconds between runs), ``jitter`` (each interval
spread by up to this fraction either way, so workers started together drift apart),
``first`` (seconds from the start of the loop to its first run) and ``run(queue, now)``.
A new one is a module like these and a line where the dispatcher makes its ``Duties``
(``Worker.__init__``). A duty that raises (the database went away) is not rescheduled: it runs
again on the dispatcher's next turn, once the connection is back.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ..queue import TaskQueue


class Duty:
    """One maintenance duty. ``due`` (``monotonic()`` seconds) is kept by ``Duties``."""

    interval: float = 1.0
    jitter: float = 0.0
    first: float = 0.0
    due: float = 0.0

    def run(self, queue: TaskQueue, now: float) -> None:
        raise NotImplementedError


class Duties:
    """The duties in the order they run when several are due at once."""

    def __init__(self, *duties: Duty) -> None:
        self.all = duties

    def __iter__(self) -> Iterator[Duty]:
        return iter(self.all)

    def start(self, now: float) -> None:
        """The loop starts: each duty's first run is ``first`` seconds from now."""
        for duty in self.all:
            duty.due = now + duty.first

    def run_due(self, queue: TaskQueue, now: float) -> None:
        for duty in self.all:
            if now >= duty.due:
                duty.run(queue, now)
                interval = duty.interval
                if duty.jitter:
                    interval *= random.uniform(1 - duty.jitter, 1 + duty.jitter)
                duty.due = now + interval

    def earliest(self) -> float:
        return min(duty.due for duty in self.all)
