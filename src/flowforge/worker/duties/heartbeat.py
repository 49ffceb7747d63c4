"""The heartbeat: extend the leases this worker holds, refresh its row in the live-worker
registry, and stop the runs of tasks it no longer holds."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ... import logs
from ...config import Settings
from ..queue import ClaimedTask, TaskQueue
from . import Duty

log = logging.getLogger("flowforge.worker")


class Heartbeat(Duty):
    def __init__(
        self,
        settings: Settings,
        name: str,
        held: dict[int, ClaimedTask],
        busy: Callable[[], int],
        on_cancel: Callable[[int], None],
        stop_run: Callable[[int], None],
    ) -> None:
        """``held``: the dispatcher's claimed tasks (the same dict, kept up to date there);
        ``on_cancel``: a cancellation seen here; ``stop_run``: tell the executor to stop a
        task's run (the task is no longer held)."""
        self.interval = max(0.05, settings.worker_lease / 3)
        self.first = self.interval  # the worker beat once before it said ready
        self.name = name
        self.held = held
        self.busy = busy
        self.on_cancel = on_cancel
        self.stop_run = stop_run

    def run(self, queue: TaskQueue, now: float) -> None:
        tasks = list(self.held.values())
        held = queue.heartbeat(tasks, busy=self.busy())
        lost = [t for t in tasks if t.id not in held and t.id in self.held]
        for task_id, cancel_requested in held.items():
            if cancel_requested:  # the fallback for a NOTIFY the listener missed
                self.on_cancel(task_id)
        if not lost:
            return
        reasons = queue.explain_refused(lost)
        for task in lost:
            refusal = reasons.get(task.id)
            reason = refusal.reason(self.name) if refusal else "the task is no longer held"
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                log.warning("task no longer held by this worker: %s; stopping its run", reason)
            self.stop_run(task.id)  # its outcome will be discarded: stop the work
