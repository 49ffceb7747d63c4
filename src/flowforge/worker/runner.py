"""The worker process: one dispatcher (the main thread), an executor (WORKER_CONCURRENCY
handler processes driven by a pool thread, or executor threads: pool.py), a listener
thread and a signal thread.

The dispatcher does all database work over one connection: it claims a batch of due
tasks, hands them to the executor, and records their outcomes together with the next
claim (one commit per batch). How far ahead it claims is ``prefetch.Prefetch``'s. Between
batches it runs its periodic duties, each at its own deadline (``Deadlines``): heartbeat
the leases it holds and its row in the live-worker registry (learning of cancellations its
listener missed), reap expired leases (anyone's), fire due schedules, poll, and ping the
systemd watchdog. On SIGTERM/SIGINT it drains: stop claiming, give back what has not
started, wait for what runs until WORKER_SHUTDOWN_TIMEOUT, give back the rest (failed if
that was its last attempt). Its retry loops wait by ``backoff.Backoff``.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic

from .. import logs, schedules
from ..config import Settings, format_duration
from ..db import DatabaseRefused, DatabaseUnavailable, first_line
from ..handlers import Handler, load_handlers
from .backoff import Backoff, retry_delay
from .execute import storable
from .listener import Listener
from .metrics import make_metrics
from .pool import Executor, make_executor
from .prefetch import Prefetch
from .queue import ClaimedTask, FinishResult, Outcome, TaskQueue
from .sdnotify import Notifier

log = logging.getLogger("flowforge.worker")

RECHECK_DELAY = 0.02  # longer than a creator's commit (fsync) takes
FLUSH_DELAY = 0.005  # outcomes wait at most this long for a claim to ride along with


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


@dataclass(slots=True)
class Deadlines:
    """When the dispatcher's duties are next due (``monotonic()`` seconds): the periodic
    ones, and those that are set only at times (None: not set)."""

    heartbeat: float  # extend the leases held, refresh the registry row
    reap: float  # give back (or fail) tasks whose lease expired
    schedules: float  # fire due schedules
    poll: float  # claim even without a notification
    flush: float | None = None  # write finished outcomes (no claim came along)
    ping: float | None = None  # the systemd watchdog
    recheck: float | None = None  # claim once more after telling creators "drained"

    def earliest(self) -> float:
        first = min(self.heartbeat, self.reap, self.poll, self.schedules)
        for at in (self.flush, self.ping, self.recheck):
            if at is not None and at < first:
                first = at
        return first


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
        self.prefetch = Prefetch(self.concurrency, self.batch)
        self.done: deque[Outcome] = deque()
        self.held: dict[int, ClaimedTask] = {}  # claimed and not yet recorded
        self.pending_outcomes: list[Outcome] = []  # finished, not yet written
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.notified = True  # claim at start
        self.waiting = False  # holding the idle lock (queries.IDLE_LOCK)
        self.drained = False  # the last claim found fewer due tasks than it asked for
        now = monotonic()
        self.deadlines = Deadlines(
            heartbeat=now, reap=now, schedules=now, poll=now + settings.worker_poll_interval
        )
        self.signalled = False  # an executor has woken the dispatcher for outcomes
        self.failed = False  # stopping for a failure of its own: exit 1
        self.listener = Listener(settings, self._on_notify, self._on_cancel)
        self.heartbeat_interval = max(0.05, settings.worker_lease / 3)
        self.reap_interval = max(0.1, min(settings.worker_lease / 2, 10.0))
        self.metrics = make_metrics(settings)
        self.executor: Executor = make_executor(
            settings, self._deliver, self.handlers, on_take=self._on_take, on_fail=self._on_fail
        )
        self.executor.set_fast(self.prefetch.fast)

    # --- wake-ups ---------------------------------------------------------------------
    def _on_notify(self) -> None:
        self.notified = True
        self.wake.set()

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
    ) -> None:
        delay = 0.0 if error is None else self._retry_delay(task)
        self.done.append(Outcome(task, error, delay, duration_ms, result, note))
        # Wake the dispatcher for the first outcome since it last drained `done` (it
        # resets the flag before draining, so an outcome is never left unnoticed), not
        # for every one: a wake-up per task would cost a thread switch per task.
        if not self.signalled:
            self.signalled = True
            self.wake.set()

    def _retry_delay(self, task: ClaimedTask) -> float:
        """How long a failed attempt waits before the next (0: it was the last)."""
        if task.attempt >= task.max_attempts:
            return 0.0
        settings = self.settings
        return retry_delay(
            task.attempt, settings.task_retry_backoff, settings.task_retry_backoff_max
        )

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
            elif outcome.error is None:  # once per task: the line without a LogRecord
                logs.log_fields(log, logging.INFO, "task completed", fields)
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
        self.executor.start()
        self.metrics.start(self.executor.busy, self.concurrency)
        self.listener.start()
        if not self._connect():
            self._stop_executor()
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

    def _write(self, limit: int) -> None:
        """Record pending outcomes and claim up to ``limit`` tasks (one statement)."""
        outcomes = self.pending_outcomes
        try:
            result = self.queue.finish_and_claim(outcomes, limit)
        except DatabaseUnavailable as exc:
            if not outcomes or not isinstance(exc, DatabaseRefused):
                raise  # an outage, or nothing of ours refused: retried as it is
            self._write_apart(limit, exc)
            return
        except Exception as exc:  # e.g. text the driver cannot encode: never sent
            if not outcomes:
                raise
            self._write_apart(limit, exc)
            return
        self.pending_outcomes = []
        self._recorded(outcomes, result, limit)

    def _write_apart(self, limit: int, exc: Exception) -> None:
        """The batch's write failed, not for an outage: one outcome the database (or the
        driver) refuses must not hold back the others, nor stop the dispatcher. Each is
        written alone; one that fails alone is replaced by a failed attempt saying why,
        and the claim goes on its own. If even that replacement fails, the trouble is not
        the outcome: raised, and the outcomes left are kept for the next try."""
        log.warning(
            "outcomes could not be recorded together (%s): recording them one by one",
            first_line(exc),
            extra={"outcomes": len(self.pending_outcomes)},
        )
        while self.pending_outcomes:
            outcome = self.pending_outcomes[0]
            try:
                result = self.queue.finish_and_claim([outcome], 0)
            except DatabaseUnavailable as refusal:
                if not isinstance(refusal, DatabaseRefused):
                    raise
                outcome = self._unrecordable(outcome, refusal)
                result = self.queue.finish_and_claim([outcome], 0)
            except Exception as refusal:
                outcome = self._unrecordable(outcome, refusal)
                result = self.queue.finish_and_claim([outcome], 0)
            self.pending_outcomes.pop(0)
            self._recorded([outcome], result, 0)
        if limit:
            self._recorded([], self.queue.finish_and_claim([], limit), limit)

    def _unrecordable(self, outcome: Outcome, exc: Exception) -> Outcome:
        """The failed attempt that replaces an outcome which cannot be written."""
        task = outcome.task
        error = storable(
            f"the worker could not record this attempt's outcome ({type(exc).__name__}: "
            f"{first_line(exc)}); the attempt counts as failed"
        )
        with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
            log.error("outcome not recordable: the attempt fails instead", extra={"error": error})
        return Outcome(task, error, self._retry_delay(task), outcome.duration_ms, None, None)

    def _recorded(self, outcomes: list[Outcome], result: FinishResult, limit: int) -> None:
        """After a write: hand the claimed tasks over, log and count the outcomes."""
        held = self.held
        for task in result.claimed:
            held[task.id] = task
        if result.claimed:  # the executor starts on these while we log
            self.executor.submit(result.claimed)
        finished, cancelled = result.finished, result.cancelled
        refused = {}
        if len(finished) < len(outcomes):  # rare: say why, not just "lease lost"
            lost = [o.task for o in outcomes if o.task.id not in finished]
            refused = {i: r.reason(self.name) for i, r in self.queue.explain_refused(lost).items()}
        avg = self.prefetch.avg_run_ms
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
            self.executor.set_fast(self.prefetch.learn(avg))
        if limit:
            self.drained = len(result.claimed) < limit
            if self.drained != self.waiting:
                # Drained: say so (creators notify from now on), then claim once more at
                # once and once shortly after, for tasks created before they could see it.
                self.queue.set_waiting(self.drained)
                self.waiting = self.drained
                if self.waiting:
                    self.notified = True
                    self.deadlines.recheck = monotonic() + RECHECK_DELAY

    def _loop(self) -> None:
        """Until told to stop: the periodic duties, then a claim or a write when one is
        wanted, else sleep until the earliest deadline or a wake-up."""
        due = self.deadlines
        now = monotonic()
        due.heartbeat = now + self.heartbeat_interval
        due.reap = due.schedules = now
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
                timeout = due.earliest() - monotonic()
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
        """Reap expired leases, fire due schedules, heartbeat: each when due."""
        due = self.deadlines
        if now >= due.reap:
            self._reap()
            due.reap = now + self.reap_interval * random.uniform(0.8, 1.2)
        if now >= due.schedules:  # periodic tasks (flowforge.schedules)
            # Not `self.notified |= ...`: that reads the flag before the round trip and
            # writes it back after, erasing a NOTIFY the listener flagged meanwhile (the
            # task then waited for the next poll).
            if self.queue.fire_schedules(datetime.now(UTC)) > 0:
                self.notified = True
            due.schedules = now + schedules.CHECK_INTERVAL
        if now >= due.heartbeat:
            self._heartbeat()
            due.heartbeat = now + self.heartbeat_interval

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

    def _heartbeat(self) -> None:
        tasks = list(self.held.values())
        held = self.queue.heartbeat(tasks, busy=self.executor.busy())
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
            self.executor.cancel(task.id)  # its outcome will be discarded: stop the work

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
