"""The dispatcher's wake-up flag against the listener thread: a NOTIFY flagged while the
dispatcher is in a database round trip of its periodic duties is still acted on."""

from __future__ import annotations

from datetime import datetime
from time import monotonic

from flowforge.config import load_settings
from flowforge.worker.dispatcher import Worker
from flowforge.worker.duties.schedules import Schedules


class SchedulesDuringNotify:
    """A queue whose schedule check (a database round trip) sees the listener flag a NOTIFY
    in the middle of it, and fires no schedule."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    def fire_schedules(self, now: datetime) -> int:
        assert self.worker is not None
        self.worker._on_notify()  # the listener thread, while the query runs
        return 0


def test_a_notify_during_the_schedule_check_is_not_erased() -> None:
    settings = load_settings(
        {"DATABASE_URL": "postgresql://unused/db", "WORKER_ISOLATION": "thread",
         "WORKER_METRICS_PORT": "0"}
    )  # fmt: skip
    worker = Worker(settings, handlers={})
    queue = SchedulesDuringNotify()
    queue.worker = worker
    worker.queue = queue  # type: ignore[assignment]
    now = monotonic()
    worker.duties.start(now + 60)  # the heartbeat and the reaper are not due
    due = next(d for d in worker.duties if isinstance(d, Schedules))
    due.due = now
    worker.notified = False
    worker._periodic(now)
    assert worker.notified, "the NOTIFY that arrived during the schedule check was lost"
    assert due.due > now
