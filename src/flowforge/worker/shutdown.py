"""The graceful stop: stop claiming, give back what has not started, wait for what runs
until WORKER_SHUTDOWN_TIMEOUT, then give back the rest (failed if that was its last
attempt). Writes while stopping retry until a deadline; the lease reaper is the backstop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from time import monotonic

from .. import logs
from ..config import Settings, format_duration
from ..db import DatabaseUnavailable
from .backoff import Backoff
from .executor import Executor
from .queue import ClaimedTask, Outcome, TaskQueue
from .sdnotify import Notifier

log = logging.getLogger("flowforge.worker")


class Stopping:
    """The dispatcher's drain (a part of ``dispatcher.Worker``)."""

    settings: Settings
    name: str
    queue: TaskQueue
    held: dict[int, ClaimedTask]
    pending_outcomes: list[Outcome]
    executor: Executor
    notifier: Notifier
    wake: threading.Event
    force: threading.Event

    _drain_done: Callable[[], None]  # dispatcher.Worker's
    _write: Callable[[int], None]  # recording.Recording's

    def _drain(self) -> None:
        timeout = self.settings.worker_shutdown_timeout
        deadline = monotonic() + timeout
        self.executor.stop()  # running tasks finish; nothing else starts
        unstarted = self.executor.take_unstarted()
        running = self.executor.busy()
        log.info(
            "stopping: running tasks get %s to finish",
            format_duration(timeout),
            extra={"running": running, "given_back": len(unstarted)},
        )
        self.notifier.stopping(f"draining {running} running task(s)")
        not_started = "not started: the worker was stopping"
        self._give_back(unstarted, not_started, deadline)
        while monotonic() < deadline and not self.force.is_set():
            self._drain_done()
            if self.pending_outcomes:
                self._try(lambda: self._write(0), deadline)
            self._give_back(self.executor.take_unstarted(), not_started, deadline)
            if not self.held:
                break
            self.notifier.watchdog()
            self.wake.wait(min(0.05, max(0.0, deadline - monotonic())))
            self.wake.clear()
        # Out of time (or told twice): end the runs. Their tasks are given back, or failed
        # if that was their last attempt.
        self._give_back(self.executor.abandon(), not_started, monotonic() + 5)
        self._drain_done()
        if self.pending_outcomes:
            self._try(lambda: self._write(0), monotonic() + 5)
        left = list(self.held.values())
        if left:
            # Say which it was: the timeout ran out, or a second stop signal cut it short.
            if self.force.is_set():
                why = "told to stop at once (a second stop signal)"
                event = "task still running when told to stop at once: given back"
            else:
                why = f"WORKER_SHUTDOWN_TIMEOUT {format_duration(timeout)} ran out"
                event = "task still running at the shutdown timeout: given back"
            reason = (
                f"interrupted by shutdown: worker {self.name} stopped while the task ran ({why})"
            )
            for task in left:
                task.started = True
                with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                    log.warning(event)
            self._give_back(left, reason, monotonic() + 5)

    def _give_back(self, tasks: list[ClaimedTask], reason: str, deadline: float) -> None:
        if not tasks:
            return

        def give() -> None:
            _, failed, cancelled = self.queue.give_back(tasks, reason)
            for task in tasks:
                self.held.pop(task.id, None)
                if task.id in failed or task.id in cancelled:
                    with logs.bind(
                        request_id=task.request_id, task_id=task.id, attempt=task.attempt
                    ):
                        if task.id in failed:
                            log.error("task failed: interrupted by shutdown on its last attempt")
                        else:
                            log.info(
                                "task cancelled",
                                extra={
                                    "outcome": "cancelled",
                                    "cause": "cancelled by request; the worker was stopping",
                                },
                            )

        self._try(give, deadline)

    def _try(self, action: Callable[[], None], deadline: float) -> bool:
        """Run a write, reconnecting until ``deadline`` (the lease reaper is the backstop)."""
        backoff = Backoff(0.1, cap=2.0)
        while True:
            try:
                action()
                return True
            except DatabaseUnavailable as exc:
                delay = backoff.next()
                if monotonic() + delay > deadline:
                    log.error("could not write to the database while stopping: %s", exc)
                    return False
                time.sleep(delay)
