"""Backpressure (``API_MAX_PENDING``): while the queue holds more pending tasks than the
limit, creating tasks answers 429 ``queue_full`` with ``Retry-After``."""

from __future__ import annotations

import time
from collections.abc import Callable

import bottle

from .envelope import ApiError

# How long a client told "queue full" should wait before trying again (seconds).
QUEUE_FULL_RETRY_AFTER = 5


class PendingGauge:
    """``API_MAX_PENDING``: is the queue full? The count is read at most once per
    ``interval`` per process (never per request), counting no further than the limit needs;
    tasks this process creates meanwhile are added to it, so one process alone stops near
    the limit rather than a second's worth of requests past it."""

    def __init__(
        self,
        count_upto: Callable[[int], int],
        limit: int,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count_upto = count_upto
        self.limit = limit
        self.interval = interval
        self.clock = clock
        self._count = 0
        self._next = float("-inf")

    def full(self) -> bool:
        now = self.clock()
        if now >= self._next:
            self._count = self.count_upto(self.limit + 1)
            self._next = now + self.interval
        return self._count > self.limit

    def added(self, n: int = 1) -> None:
        self._count += n


class Admission:
    """API_MAX_PENDING: refuse new tasks (429 ``queue_full``) while the queue holds more
    than ``limit`` pending ones; 0 admits everything."""

    def __init__(self, count_upto: Callable[[int], int], limit: int) -> None:
        self.pending = PendingGauge(count_upto, limit) if limit else None

    def __call__(self, n: int = 1) -> None:
        pending = self.pending
        if pending is None:
            return
        if pending.full():
            bottle.response.set_header("Retry-After", str(QUEUE_FULL_RETRY_AFTER))
            raise ApiError(
                429,
                f"the queue is full (more than {pending.limit} pending tasks); "
                f"retry in {QUEUE_FULL_RETRY_AFTER} seconds",
                {"max_pending": pending.limit},
                code="queue_full",
            )
        pending.added(n)
