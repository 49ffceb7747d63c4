"""The dispatcher (the worker process's main thread) and its deadlines.

The dispatcher does all database work over one connection: it claims a batch of due
tasks, hands them to the executor (executor.py: handler processes driven by a pool thread,
or executor threads), and records their outcomes together with the next claim (one commit
per batch: recording.py). How far ahead it claims is ``prefetch.Prefetch``'s. Between
batches it runs its maintenance duties (duties/: heartbeat, lease reaping, schedules,
retention), each when due, polls, and pings the systemd watchdog (``Deadlines``). On
SIGTERM/SIGINT it drains (shutdown.py). Its retry loops wait by ``backoff.Backoff``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass
from time import monotonic

from ..config import Settings
from ..db import DatabaseRefused, DatabaseUnavailable
from ..handlers import Handler, load_handlers
from .backoff import Backoff
from .duties import Duties
from .duties.heartbeat import Heartbeat
from .duties.queue_settings import QueueSettings
from .duties.reaper import Reaper
from .duties.retention import Retention
from .duties.schedules import Schedules
from .execute import Detail
from .executor import Executor, make_executor
from .listener import Listener
from .metrics import make_metrics
from .prefetch import Prefetch
from .queue import ClaimedTask, Outcome, TaskQueue
from .recording import Recording
from .sdnotify import Notifier
from .shutdown import Stopping

log = logging.getLogger("flowforge.worker")

FLUSH_DELAY = 0.005  # outcomes wait at most this long for a claim to ride along with


def identity() -> str:
    """``host:pid``: who holds a task (the tasks.worker column)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class Deadlines:
    """When the dispatcher's own deadlines are next due (``monotonic()`` seconds): the poll,
    and those that are set only at times (None: not set). The maintenance duties keep
    their own (``Duties``)."""

    poll: float  # claim even without a notification
    flush: float | None = None  # write finished outcomes (no claim came along)
    ping: float | None = None  # the systemd watchdog
    recheck: float | None = None  # claim once more after telling creators "drained"

    def earliest(self, duties: Duties) -> float:
        first = min(self.poll, duties.earliest())
        for at in (self.flush, self.ping, self.recheck):
            if at is not None and at < first:
                first = at
        return first


class Worker(Recording, Stopping):
    """The dispatcher: ``run`` until told to stop, then drain."""

    def __init__(
        self,
        settings: Settings,
        *,
        handlers: dict[str, Handler] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.name = identity()
        self.handlers = load_handlers() if handlers is None else handlers
        self.queue = TaskQueue(settings, self.name)
        self.notifier = notifier or Notifier()
        self.concurrency = settings.worker_concurrency
        self.batch = settings.worker_batch_size
        self.prefetch = Prefetch(self.concurrency, self.batch)
        self.done: deque[Outcome] = deque()
        self.held: dict[int, ClaimedTask] = {}  # claimed and not yet recorded
        self.pending_outcomes: list[Outcome] = []  # finished, not yet written
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.notified = True  # claim at start
        self.waiting = False  # holding the idle lock (common_sql.IDLE_LOCK)
        self.drained = False  # the last claim found fewer due tasks than it asked for
        self.deadlines = Deadlines(poll=monotonic() + settings.worker_poll_interval)
        self.signalled = False  # an executor has woken the dispatcher for outcomes
        self.failed = False  # stopping for a failure of its own: exit 1
        self.queue_settings = QueueSettings()
        self.listener = Listener(settings, self._on_notify, self._on_cancel, self._on_queues)
        self.metrics = make_metrics(settings)
        self.executor: Executor = make_executor(
            settings, self._deliver, self.handlers, on_take=self._on_take, on_fail=self._on_fail
        )
        self.executor.set_fast(self.prefetch.fast)
        self.heartbeat = Heartbeat(
            settings, self.name, self.held, self.executor.busy, self._on_cancel,
            self.executor.cancel,
        )  # fmt: skip
        # In this order when several are due at once; TASK_RETENTION=0 keeps every task.
        duties = [self.queue_settings, Reaper(settings), Schedules(self._schedules_fired),
                  self.heartbeat]  # fmt: skip
        if settings.task_retention > 0:
            duties.append(Retention(settings, self.metrics))
        self.duties = Duties(*duties)

    # --- wake-ups ---------------------------------------------------------------------
    def _on_notify(self) -> None:
        self.notified = True
        self.wake.set()

    def _on_queues(self) -> None:
        """A queue's settings changed (NOTIFY flowforge_queues): read them, then claim."""
        self.queue_settings.now()
        self._on_notify()

    def _on_cancel(self, task_id: int) -> None:
        """A cancellation (NOTIFY flowforge_cancel, or seen with the heartbeat)."""
        if task_id in self.held:
            self.executor.cancel(task_id)

    def _on_fail(self) -> None:
        """The executor failed (a bug, logged where it happened): stop, and exit 1 so the
        supervisor starts a fresh worker, rather than claim for an executor that runs
        nothing."""
        self.failed = True
        self.request_stop()

    def _schedules_fired(self) -> None:
        """A schedule created a task: claim (no wake-up needed: the dispatcher is here)."""
        self.notified = True

    def request_stop(self, signum: int | None = None) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second signal: stop waiting for running tasks
        self.stopping.set()
        self.wake.set()

    # --- outcomes (from the executor's threads) ---------------------------------------
    def _on_take(self) -> None:
        if self.executor.queued() < self.prefetch.low_water:
            self.wake.set()

    def _deliver(
        self,
        task: ClaimedTask,
        error: str | None,
        result: str | None,
        duration_ms: float,
        note: str | None,
        detail: Detail | None = None,
        cpu: float | None = None,
        peak: int | None = None,
    ) -> None:
        if detail is not None and detail.kind in ("snoozed", "discarded"):
            delay = detail.delay  # a snooze's seconds; a discard has no retry
        else:
            delay = 0.0 if error is None else self._retry_delay(task)
        self.done.append(Outcome(task, error, delay, duration_ms, result, note, detail, cpu, peak))
        # Wake the dispatcher for the first outcome since it last drained `done` (it
        # resets the flag before draining, so an outcome is never left unnoticed), not
        # for every one: a wake-up per task would cost a thread switch per task.
        if not self.signalled:
            self.signalled = True
            self.wake.set()

    # --- the dispatcher ---------------------------------------------------------------
    def run(self) -> int:
        self.executor.start()
        self.metrics.start(self.executor.busy, self.concurrency)
        self.listener.start()
        if not self._connect():
            self._stop_executor()
            self.metrics.stop()
            return 0  # stopped before the database came up
        self.listener.listening.wait(self.settings.database_connect_timeout + 1)
        try:
            self.heartbeat.run(self.queue, monotonic())  # registered before it says ready
        except DatabaseUnavailable as exc:
            log.warning("could not register this worker yet: %s", exc)
        log.info(
            "worker ready",
            extra={
                "worker": self.name,
                "concurrency": self.concurrency,
                "batch_size": self.batch,
                "isolation": self.settings.worker_isolation,
                "queues": list(self.settings.worker_queues),
                "handlers": sorted(self.handlers),
            },
        )
        self.notifier.ready(f"ready: {self.name}, concurrency {self.concurrency}")
        failed = False
        try:
            self._loop()
        except Exception:
            # A bug, not a handler's doing (those are contained where they happen): stop
            # as on SIGTERM, and exit 1 so the supervisor starts a fresh worker. Never
            # live on without a dispatcher, holding leases nobody extends.
            log.critical("the dispatcher failed: stopping the worker", exc_info=True)
            failed = True
        try:
            self._drain()
        except Exception:
            log.critical("stopping failed: ending every run now", exc_info=True)
            self.executor.abandon()
            failed = True
        self.listener.stop()
        with contextlib.suppress(DatabaseUnavailable):  # else the row expires by itself
            self.queue.unregister()
        self.queue.close()
        self.metrics.stop()
        log.info("worker stopped", extra={"worker": self.name})
        return 1 if failed or self.failed else 0

    def _stop_executor(self) -> None:
        self.executor.stop()
        self.executor.abandon()

    def _connect(self) -> bool:
        """Connect, retrying with backoff; False if asked to stop meanwhile."""
        backoff = Backoff(0.1, cap=5.0, jitter=0.2)
        while not self.stopping.is_set():
            try:
                self.queue.ensure_connected()
                return True
            except DatabaseUnavailable as exc:
                delay = backoff.next()
                log.warning("database unavailable: %s; retrying in %.1fs", exc, delay)
                self.notifier.status(f"database unavailable, retrying: {exc}")
                self.notifier.watchdog()
                self.stopping.wait(delay)
        return False

    def _reconnect(self) -> bool:
        """After an outage: connect again, say so, and claim at once."""
        if not self._connect():
            return False
        log.info("database reachable again")
        self.notifier.status(f"ready: {self.name}")
        self.notified = True
        return True

    def _drain_done(self) -> None:
        self.signalled = False
        done = self.done
        out = self.pending_outcomes
        while done:
            out.append(done.popleft())

    def _loop(self) -> None:
        """Until told to stop: the periodic duties, then a claim or a write when one is
        wanted, else sleep until the earliest deadline or a wake-up."""
        due = self.deadlines
        now = monotonic()
        self.duties.start(now)
        due.poll = now + self.settings.worker_poll_interval
        self.drained = False
        outage = False
        while not self.stopping.is_set():
            try:
                if outage:
                    if not self._reconnect():
                        return
                    outage = False
                now = monotonic()
                due.ping = self.notifier.watchdog(now)
                self._periodic(now)
                self._drain_done()
                if self._dispatch(now):
                    continue
                timeout = due.earliest(self.duties) - monotonic()
                if timeout > 0:
                    self.wake.wait(timeout)
                self.wake.clear()
            except DatabaseRefused as exc:
                log.error("database error: %s; retrying (is the schema migrated?)", exc)
                self.notifier.status(f"database error: {exc}")
                self.stopping.wait(min(self.settings.worker_poll_interval, 5.0))
            except DatabaseUnavailable as exc:
                log.warning("database connection lost: %s; reconnecting", exc)
                self.waiting = False  # the idle lock went with the session
                self.notifier.status(f"database unavailable: {exc}")
                outage = True

    def _periodic(self, now: float) -> None:
        """The maintenance duties that are due (reap, schedules, heartbeat, retention)."""
        self.duties.run_due(self.queue, now)

    def _dispatch(self, now: float) -> bool:
        """Claim (with the finished outcomes riding along) when the executor runs low and
        there may be due tasks, or write the outcomes alone when they have waited long
        enough; False if neither was due."""
        due = self.deadlines
        prefetch = self.prefetch
        recheck = due.recheck is not None and now >= due.recheck
        if recheck:
            due.recheck = None
        unwritten = self.pending_outcomes
        room = prefetch.room(len(self.held), len(unwritten))
        queued = self.executor.queued()
        low = queued < prefetch.low_water
        want_claim = (
            low and room > 0 and (not self.drained or self.notified or now >= due.poll or recheck)
        )
        flush = False
        if unwritten:
            if due.flush is None:
                due.flush = now + FLUSH_DELAY
            flush = want_claim or now >= due.flush or len(unwritten) >= self.batch
        if not (want_claim or flush):
            return False
        self.notified = False
        limit = min(self.batch, room) if low else 0
        self._write(limit)
        due.flush = None
        if limit:
            due.poll = now + self.settings.worker_poll_interval
            if self.drained:
                due.poll = self._next_due(now, due.poll)
        return True

    def _next_due(self, now: float, next_poll: float) -> float:
        """Wake for a retry whose backoff ends before the next poll."""
        seconds = self.queue.seconds_until_due()
        if seconds is None:
            return next_poll
        # Due already: rows another worker was locking as we claimed; look again soon.
        return min(next_poll, monotonic() + max(seconds + 0.002, 0.05))
