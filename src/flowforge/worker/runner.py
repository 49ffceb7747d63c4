"""The worker process: one dispatcher (the main thread), an executor (WORKER_CONCURRENCY
handler processes driven by a pool thread, or executor threads: pool.py), a listener
thread and a signal thread.

The dispatcher does all database work over one connection: it claims a batch of due
tasks, hands them to the executor, and records their outcomes together with the next
claim (one commit per batch). It also heartbeats the leases it holds and its row in the
live-worker registry (learning of cancellations its listener missed), reaps expired
leases (anyone's), pings the systemd watchdog and, on SIGTERM/SIGINT, drains: stop
claiming, give back what has not started, wait for what runs until
WORKER_SHUTDOWN_TIMEOUT, give back the rest (failed if that was its last attempt).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import random
import signal
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from time import monotonic

from .. import logs, schedules
from ..config import Settings, format_duration
from ..db import DatabaseRefused, DatabaseUnavailable
from ..handlers import Handler, load_handlers
from .listener import Listener
from .metrics import make_metrics
from .pool import ProcessPool, ThreadPool
from .queue import ClaimedTask, Outcome, TaskQueue, retry_delay
from .sdnotify import Notifier

log = logging.getLogger("flowforge.worker")

RECHECK_DELAY = 0.02  # longer than a creator's commit (fsync) takes
FLUSH_DELAY = 0.005  # outcomes wait at most this long for a claim to ride along with
FAST_TASK_MS = 5.0  # tasks shorter than this on average are claimed ahead (double buffered)


def outcome_name(outcome: Outcome, accepted: bool, cancelled: bool = False) -> str:
    """How a run ended, as the metrics name it (worker.metrics.OUTCOMES)."""
    if not accepted:
        return "lease_lost"
    if cancelled:
        return "cancelled"
    if outcome.error is None:
        return "completed"
    return "failed" if outcome.task.attempt >= outcome.task.max_attempts else "retried"


def identity() -> str:
    """``host:pid``: who holds a task (the tasks.worker column)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
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
        # How far ahead to claim. Short tasks drain a batch faster than a claim's round
        # trip, so the worker double-buffers (claims again while `low_water` still wait,
        # holds up to `max_held`). Long tasks gain nothing from that: a worker hoarding
        # them starves its peers, and a SIGKILL would cost every hoarded task a lease
        # expiry. So it claims ahead only while the average run is short (learned from
        # the outcomes; it starts out assuming long tasks).
        self.avg_run_ms = FAST_TASK_MS * 10
        self.done: deque[Outcome] = deque()
        self.held: dict[int, ClaimedTask] = {}  # claimed and not yet recorded
        self.pending_outcomes: list[Outcome] = []  # finished, not yet written
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.notified = True  # claim at start
        self.waiting = False  # holding the idle lock (queries.IDLE_LOCK)
        self.recheck_at: float | None = None
        self.signalled = False  # an executor has woken the dispatcher for outcomes
        self.listener = Listener(settings, self._on_notify, self._on_cancel)
        self.heartbeat_interval = max(0.05, settings.worker_lease / 3)
        self.reap_interval = max(0.1, min(settings.worker_lease / 2, 10.0))
        self.metrics = make_metrics(settings)
        self.pool: ProcessPool | ThreadPool
        if settings.worker_isolation == "thread":
            self.pool = ThreadPool(settings, self._deliver, self.handlers)
            self.pool.on_take = self._on_take
        else:
            self.pool = ProcessPool(settings, self._deliver)
        self._set_prefetch()

    def _set_prefetch(self) -> None:
        fast = self.avg_run_ms < FAST_TASK_MS
        if fast:
            self.low_water = max(self.concurrency, self.batch)
            self.max_held = self.concurrency + 2 * self.batch
        else:  # claim only for free executors: nothing waits in a worker's queue
            self.low_water = 1
            self.max_held = self.concurrency
        self.pool.set_fast(fast)

    # --- wake-ups ---------------------------------------------------------------------
    def _on_notify(self) -> None:
        self.notified = True
        self.wake.set()

    def _on_cancel(self, task_id: int) -> None:
        """A cancellation (NOTIFY flowforge_cancel, or seen with the heartbeat)."""
        if task_id in self.held:
            self.pool.cancel(task_id)

    def request_stop(self, signum: int | None = None) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second signal: stop waiting for running tasks
        self.stopping.set()
        self.wake.set()

    # --- outcomes (from the executor's threads) ---------------------------------------
    def _on_take(self) -> None:
        if self.pool.queued() < self.low_water:
            self.wake.set()

    def _deliver(
        self,
        task: ClaimedTask,
        error: str | None,
        result: str | None,
        duration_ms: float,
        note: str | None,
    ) -> None:
        delay = 0.0
        if error is not None and task.attempt < task.max_attempts:
            settings = self.settings
            delay = retry_delay(
                task.attempt, settings.task_retry_backoff, settings.task_retry_backoff_max
            )
        self.done.append(Outcome(task, error, delay, duration_ms, result, note))
        # Wake the dispatcher for the first outcome since it last drained `done` (it
        # resets the flag before draining, so an outcome is never left unnoticed), not
        # for every one: a wake-up per task would cost a thread switch per task.
        if not self.signalled:
            self.signalled = True
            self.wake.set()

    def _log_outcome(
        self, outcome: Outcome, accepted: bool, cancelled: bool, refused: str | None
    ) -> None:
        task = outcome.task
        with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
            fields = {"type": task.type, "duration_ms": outcome.duration_ms}
            if not accepted:
                log.warning(
                    "outcome discarded: %s",
                    refused or "the task is no longer held by this worker",
                    extra={**fields, "error": outcome.error, "outcome": "discarded"},
                )
            elif cancelled:
                log.info(
                    "task cancelled",
                    extra={
                        **fields,
                        "outcome": "cancelled",
                        "cause": outcome.note or "cancelled by request while it ran",
                        "error": outcome.error,
                    },
                )
            elif outcome.error is None:
                log.info("task completed", extra=fields)
            elif task.attempt >= task.max_attempts:
                log.error(
                    "task failed: attempts used up",
                    extra={**fields, "error": outcome.error, "outcome": "failed"},
                )
            else:
                log.warning(
                    "task failed: retry in %.3fs",
                    outcome.delay,
                    extra={
                        **fields,
                        "error": outcome.error,
                        "retry_in_s": round(outcome.delay, 3),
                        "outcome": "retried",
                    },
                )

    # --- the dispatcher ---------------------------------------------------------------
    def run(self) -> int:
        self.pool.start()
        self.metrics.start(self.pool.busy, self.concurrency)
        self.listener.start()
        if not self._connect():
            self._stop_pool()
            self.metrics.stop()
            return 0  # stopped before the database came up
        self.listener.listening.wait(self.settings.database_connect_timeout + 1)
        try:
            self._heartbeat()  # in the registry before it says ready
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
        self._loop()
        self._drain()
        self.listener.stop()
        with contextlib.suppress(DatabaseUnavailable):  # else the row expires by itself
            self.queue.unregister()
        self.queue.close()
        self.metrics.stop()
        log.info("worker stopped", extra={"worker": self.name})
        return 0

    def _stop_pool(self) -> None:
        self.pool.stop()
        self.pool.abandon()

    def _connect(self) -> bool:
        """Connect, retrying with backoff; False if asked to stop meanwhile."""
        delay = 0.1
        while not self.stopping.is_set():
            try:
                self.queue.ensure_connected()
                return True
            except DatabaseUnavailable as exc:
                log.warning("database unavailable: %s; retrying in %.1fs", exc, delay)
                self.notifier.status(f"database unavailable, retrying: {exc}")
                self.notifier.watchdog()
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0) * random.uniform(0.8, 1.2)
        return False

    def _drain_done(self) -> None:
        self.signalled = False
        done = self.done
        out = self.pending_outcomes
        while done:
            out.append(done.popleft())

    def _write(self, limit: int) -> None:
        """Record pending outcomes and claim up to ``limit`` tasks (one statement)."""
        outcomes = self.pending_outcomes
        result = self.queue.finish_and_claim(outcomes, limit)
        self.pending_outcomes = []
        held = self.held
        for task in result.claimed:
            held[task.id] = task
        if result.claimed:  # the executor starts on these while we log
            self.pool.submit(result.claimed)
        finished, cancelled = result.finished, result.cancelled
        refused = {}
        if len(finished) < len(outcomes):  # rare: say why, not just "lease lost"
            lost = [o.task for o in outcomes if o.task.id not in finished]
            refused = {i: r.reason(self.name) for i, r in self.queue.explain_refused(lost).items()}
        avg = self.avg_run_ms
        metrics = self.metrics
        for task in result.claimed:
            metrics.task_claimed(task.queue, task.waited)
        for outcome in outcomes:
            task = outcome.task
            held.pop(task.id, None)
            accepted = task.id in finished
            was_cancelled = task.id in cancelled
            self._log_outcome(outcome, accepted, was_cancelled, refused.get(task.id))
            metrics.task_finished(
                task.queue,
                task.type if task.type in self.handlers else "unknown",
                outcome_name(outcome, accepted, was_cancelled),
                outcome.duration_ms / 1000,
            )
            avg += (outcome.duration_ms - avg) * 0.1  # moving average of the run time
        if outcomes:
            self.avg_run_ms = avg
            self._set_prefetch()
        if limit:
            self.drained = len(result.claimed) < limit
            if self.drained != self.waiting:
                # Drained: say so (creators notify from now on), then claim once more at
                # once and once shortly after, for tasks created before they could see it.
                self.queue.set_waiting(self.drained)
                self.waiting = self.drained
                if self.waiting:
                    self.notified = True
                    self.recheck_at = monotonic() + RECHECK_DELAY

    def _loop(self) -> None:
        now = monotonic()
        next_heartbeat = now + self.heartbeat_interval
        next_reap = now
        next_schedules = now
        next_poll = now + self.settings.worker_poll_interval
        flush_at: float | None = None
        self.drained = False
        outage = False
        while not self.stopping.is_set():
            try:
                if outage:
                    if not self._connect():
                        return
                    log.info("database reachable again")
                    self.notifier.status(f"ready: {self.name}")
                    outage = False
                    self.notified = True
                now = monotonic()
                next_ping = self.notifier.watchdog(now)
                if now >= next_reap:
                    self._reap()
                    next_reap = now + self.reap_interval * random.uniform(0.8, 1.2)
                if now >= next_schedules:  # periodic tasks (flowforge.schedules)
                    self.notified |= self.queue.fire_schedules(datetime.now(UTC)) > 0
                    next_schedules = now + schedules.CHECK_INTERVAL
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + self.heartbeat_interval
                self._drain_done()
                recheck = self.recheck_at is not None and now >= self.recheck_at
                if recheck:
                    self.recheck_at = None
                room = max(0, self.max_held - len(self.held) + len(self.pending_outcomes))
                queued = self.pool.queued()
                want_claim = (
                    queued < self.low_water
                    and room > 0
                    and (not self.drained or self.notified or now >= next_poll or recheck)
                )
                if self.pending_outcomes and flush_at is None:
                    flush_at = now + FLUSH_DELAY
                flush = bool(self.pending_outcomes) and (
                    want_claim or now >= flush_at or len(self.pending_outcomes) >= self.batch
                )
                if want_claim or flush:
                    self.notified = False
                    limit = min(self.batch, room) if queued < self.low_water else 0
                    self._write(limit)
                    flush_at = None
                    if limit:
                        next_poll = now + self.settings.worker_poll_interval
                        if self.drained:
                            next_poll = self._next_due(now, next_poll)
                    continue
                deadlines = [next_heartbeat, next_reap, next_poll, next_schedules]
                if flush_at is not None:
                    deadlines.append(flush_at)
                if next_ping is not None:
                    deadlines.append(next_ping)
                if self.recheck_at is not None:
                    deadlines.append(self.recheck_at)
                timeout = min(deadlines) - monotonic()
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

    def _next_due(self, now: float, next_poll: float) -> float:
        """Wake for a retry whose backoff ends before the next poll."""
        seconds = self.queue.seconds_until_due()
        if seconds is None:
            return next_poll
        # Due already: rows another worker was locking as we claimed; look again soon.
        return min(next_poll, monotonic() + max(seconds + 0.002, 0.05))

    def _heartbeat(self) -> None:
        tasks = list(self.held.values())
        held = self.queue.heartbeat(tasks, busy=self.pool.busy())
        lost = [t for t in tasks if t.id not in held and t.id in self.held]
        for task_id, cancel_requested in held.items():
            if cancel_requested:  # the fallback for a NOTIFY the listener missed
                self._on_cancel(task_id)
        if not lost:
            return
        reasons = self.queue.explain_refused(lost)
        for task in lost:
            refusal = reasons.get(task.id)
            reason = refusal.reason(self.name) if refusal else "the task is no longer held"
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                log.warning("task no longer held by this worker: %s; stopping its run", reason)
            self.pool.cancel(task.id)  # its outcome will be discarded: stop the work

    def _reap(self) -> None:
        for task in self.queue.reap_expired():
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempts):
                fields = {"lease_expiries": task.lease_expiries, "holder": task.worker}
                if task.status != "failed":
                    log.warning("lease expired: task given back", extra=fields)
                elif task.lease_expiries >= self.settings.worker_max_lease_expiries:
                    log.error("lease expired too often: task failed", extra=fields)
                else:
                    log.error("lease expired on the last attempt: task failed", extra=fields)

    # --- graceful stop ----------------------------------------------------------------
    def _drain(self) -> None:
        timeout = self.settings.worker_shutdown_timeout
        deadline = monotonic() + timeout
        self.pool.stop()  # running tasks finish; nothing else starts
        unstarted = self.pool.take_unstarted()
        running = self.pool.busy()
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
            self._give_back(self.pool.take_unstarted(), not_started, deadline)
            if not self.held:
                break
            self.notifier.watchdog()
            self.wake.wait(min(0.05, max(0.0, deadline - monotonic())))
            self.wake.clear()
        # Out of time (or told twice): end the runs. Their tasks are given back, or failed
        # if that was their last attempt.
        self._give_back(self.pool.abandon(), not_started, monotonic() + 5)
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

    def _try(self, action, deadline: float) -> bool:  # type: ignore[no-untyped-def]
        """Run a write, reconnecting until ``deadline`` (the lease reaper is the backstop)."""
        delay = 0.1
        while True:
            try:
                action()
                return True
            except DatabaseUnavailable as exc:
                if monotonic() + delay > deadline:
                    log.error("could not write to the database while stopping: %s", exc)
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def run_worker(settings: Settings) -> int:
    """``flowforge worker``: run until SIGTERM or SIGINT, then drain; 0 after a clean stop."""
    # Signals are taken by a thread of their own with sigwait: a Python signal handler
    # could run while the main thread holds the wake-up Event's lock and deadlock on it.
    # The mask is set before any thread starts, so every thread inherits it.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    faulthandler.enable()  # a crash in the dispatcher leaves a traceback on stderr
    worker = Worker(settings)

    def wait_signals() -> None:
        while True:
            signum = signal.sigwait(stop_signals)
            log.info("received %s", signal.Signals(signum).name)
            worker.request_stop(signum)

    threading.Thread(target=wait_signals, name="flowforge-signals", daemon=True).start()
    try:
        return worker.run()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
