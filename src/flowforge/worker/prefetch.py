"""How far ahead the dispatcher claims.

Short tasks drain a batch faster than a claim's round trip, so the worker double-buffers:
it claims again while ``low_water`` tasks still wait for an executor, and holds up to
``max_held``. Long tasks gain nothing from that: a worker hoarding them starves its peers,
and a SIGKILL would cost every hoarded task a lease expiry. So it claims ahead only while
the average run is short, learned from the outcomes; it starts out assuming long tasks.
"""

from __future__ import annotations

FAST_TASK_MS = 5.0  # tasks shorter than this on average are claimed ahead (double buffered)


class Prefetch:
    __slots__ = ("avg_run_ms", "batch", "concurrency", "fast", "low_water", "max_held")

    def __init__(self, concurrency: int, batch: int) -> None:
        self.concurrency = concurrency
        self.batch = batch
        self.avg_run_ms = FAST_TASK_MS * 10
        self.fast = False
        self.low_water = 1
        self.max_held = concurrency
        self.settle()

    def learn(self, avg_run_ms: float) -> bool:
        """Take the new moving average of the run time; returns whether tasks are fast."""
        self.avg_run_ms = avg_run_ms
        return self.settle()

    def settle(self) -> bool:
        self.fast = self.avg_run_ms < FAST_TASK_MS
        if self.fast:
            self.low_water = max(self.concurrency, self.batch)
            self.max_held = self.concurrency + 2 * self.batch
        else:  # claim only for free executors: nothing waits in a worker's queue
            self.low_water = 1
            self.max_held = self.concurrency
        return self.fast

    def room(self, held: int, unwritten: int) -> int:
        """How many more tasks may be claimed: held ones whose outcome is not yet written
        are done, they no longer count."""
        return max(0, self.max_held - held + unwritten)
