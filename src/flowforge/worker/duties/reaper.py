"""The lease reaper: give back (or fail) the tasks whose lease expired, whoever held them
(a worker that died, or lost its connection for longer than WORKER_LEASE)."""

from __future__ import annotations

import logging

from ... import logs
from ...config import Settings
from ..queue import TaskQueue
from . import Duty

log = logging.getLogger("flowforge.worker")


class Reaper(Duty):
    jitter = 0.2  # workers started together reap apart

    def __init__(self, settings: Settings) -> None:
        self.interval = max(0.1, min(settings.worker_lease / 2, 10.0))
        self.max_expiries = settings.worker_max_lease_expiries

    def run(self, queue: TaskQueue, now: float) -> None:
        for task in queue.reap_expired():
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempts):
                fields = {"lease_expiries": task.lease_expiries, "holder": task.worker}
                if task.status != "failed":
                    log.warning("lease expired: task given back", extra=fields)
                elif task.lease_expiries >= self.max_expiries:
                    log.error("lease expired too often: task failed", extra=fields)
                else:
                    log.error("lease expired on the last attempt: task failed", extra=fields)
