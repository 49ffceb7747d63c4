"""The queue's database side: one autocommit connection and the statements of queue_sql.py.

``TaskQueue`` is a thin manager over the SQL (claim, finish, heartbeat, give back, reap);
it knows nothing about threads or handlers. A broken connection becomes
``DatabaseUnavailable`` and is dropped, the next call reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from .. import __version__
from ..config import Settings
from ..db import HEALTH, DatabaseRefused, connect, refused
from ..domain.fields import DEFAULT_QUEUE, DEFAULT_TIMEOUT
from ..stores import common_sql, ops_sql, queue_sql, queues_sql
from ..stores import schedules as schedule_store
from .execute import Detail
from .limits import SKIP_BACKLOG, Limits

log = logging.getLogger("flowforge.worker")


@dataclass(slots=True)
class ClaimedTask:
    """A task this worker holds: its input, attempt number and fencing token."""

    id: int
    type: str
    payload: dict[str, Any]
    attempt: int  # attempts including this one (counted at claim time)
    max_attempts: int
    request_id: str | None
    token: uuid.UUID
    started: bool = False
    queue: str = DEFAULT_QUEUE
    waited: float = 0.0  # seconds from due (run_at) to claimed
    timeout: int = DEFAULT_TIMEOUT  # seconds one attempt may run (the task's timeout column)


@dataclass(slots=True)
class Outcome:
    """How one run ended: ``error`` None is success; otherwise retry after ``delay``.

    ``result``: the handler's return value as JSON text (None: nothing returned).
    ``note``: how a cancelled run ended, in the worker's words (None: not cancelled as far
    as the worker knows; the database still makes the task cancelled if it was flagged).
    """

    task: ClaimedTask
    error: str | None = None
    delay: float = 0.0
    duration_ms: float = 0.0
    result: str | None = None
    note: str | None = None
    detail: Detail | None = None  # what its history entry adds (execute.Detail)
    cpu: float | None = None  # the run's CPU seconds (process isolation)
    peak: int | None = None  # the handler process's peak RSS, bytes (process isolation)


def _details(outcomes: Sequence[Outcome]) -> dict[str, list[Any] | None]:
    """The outcomes' history details as the finishing statement's arrays. An array of
    NULLs is sent as one NULL (unnest pads it with NULLs), the common case for the kinds,
    tracebacks and signals of plain runs: psycopg dumps a list element by element, and
    each array costs the dispatcher about 1 us per task (the numbers go in binary)."""
    cpus = [o.cpu for o in outcomes]
    rsss = [o.peak for o in outcomes]
    numbers = {
        "cpus": cpus if any(x is not None for x in cpus) else None,
        "rsss": rsss if any(x is not None for x in rsss) else None,
    }
    if all(o.detail is None for o in outcomes):
        return {"kinds": None, "tracebacks": None, "signals": None, **numbers}
    ds = [o.detail for o in outcomes]
    return {
        "kinds": [d and d.kind for d in ds],
        "tracebacks": [d and d.traceback for d in ds],
        "signals": [d and d.signal for d in ds],
        **numbers,
    }


def _claimed(rows: list[list[Any]], token: uuid.UUID) -> list[ClaimedTask]:
    """The claimed tasks of a claim's JSON answer (queue_sql.CLAIMED_JSON)."""
    return [
        ClaimedTask(
            r[0], r[1], r[2], r[3], r[4], r[5], token, queue=r[7], waited=r[6], timeout=r[8]
        )
        for r in rows
    ]


@dataclass(slots=True)
class Refusal:
    """Why the database refused an outcome or a heartbeat: what the row says now."""

    id: int
    status: str | None  # None: the task is gone (deleted)
    worker: str | None
    ours: bool  # our fencing token is still on it

    def reason(self, me: str) -> str:
        if self.status is None:
            return "the task was deleted while it ran"
        if self.worker != me or (self.status == "processing" and not self.ours):
            return (
                "lease lost: the lease expired and the task was given back "
                f"(now {self.status}, held by {self.worker or 'nobody'})"
            )
        return f"the task was changed to {self.status} by someone else while it ran"


@dataclass(slots=True)
class ReapedTask:
    id: int
    status: str
    lease_expiries: int
    worker: str | None
    request_id: str | None
    attempts: int
    max_attempts: int


@dataclass(slots=True)
class FinishResult:
    finished: set[int] = field(default_factory=set)  # outcomes the database accepted
    claimed: list[ClaimedTask] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)  # accepted, and ended cancelled


class TaskQueue:
    """Claims and outcome writes for one worker identity, over one connection."""

    def __init__(self, settings: Settings, worker: str) -> None:
        self.settings = settings
        self.worker = worker
        self.conn: psycopg.Connection | None = None
        # Every queue: one ordered index scan; named queues: one per queue, merged.
        self.queues = list(settings.worker_queues)
        self.every_queue = self.queues == ["*"]
        self.claim_sql = (
            queue_sql.FINISH_AND_CLAIM if self.every_queue else queue_sql.FINISH_AND_CLAIM_QUEUES
        )
        # The queues with settings (worker.limits); none: the claim above, as it was.
        self.limits = Limits(None if self.every_queue else self.queues)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings)
        try:
            yield self.conn
        except psycopg.Error as exc:  # e.g. no tasks table yet: the worker waits, not dies
            if isinstance(exc, psycopg.OperationalError):
                self.close()  # broken: the next statement reconnects
            raise refused(exc) from exc

    def _execute(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def ensure_connected(self) -> None:
        self._execute(HEALTH, {})

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                self.conn.close()
            self.conn = None

    def finish_and_claim(self, outcomes: Sequence[Outcome], limit: int) -> FinishResult:
        """Record ``outcomes`` and claim up to ``limit`` due tasks: one statement, one commit
        (while no queue has settings; else ``_limited``)."""
        if not self.limits.restricted:
            result = self._finish_and_claim(self.claim_sql, outcomes, limit, self.queues)
        else:
            result = self._limited(outcomes, limit)
        if self.limits.breakers and outcomes:
            self._report_breakers(outcomes, result)
        return result

    def _report_breakers(self, outcomes: Sequence[Outcome], result: FinishResult) -> None:
        """Failed attempts of breaker queues, and a tripped queue's probe outcome, to the
        breaker (queues_sql.BREAKER_OUTCOMES); logs a trip, a resume, a failed probe."""
        limits = self.limits
        rows = []
        for o in outcomes:
            task, kind = o.task, o.detail and o.detail.kind
            if task.queue not in limits.breakers or task.id not in result.finished:
                continue
            if task.id in result.cancelled or kind == "snoozed":
                continue  # neither a failure nor a success
            failed = o.error is not None
            if failed or task.queue in limits.tripped:
                rows.append((task.queue, task.id, failed))
        if not rows:
            return
        params = {k: [r[i] for r in rows] for i, k in enumerate(("queues", "ids", "failed"))}
        with self._connection() as conn, conn.transaction():
            conn.execute(queues_sql.LOCK_BREAKERS, {"queues": sorted(set(params["queues"]))})
            changed = conn.execute(queues_sql.BREAKER_OUTCOMES, params).fetchall()
        for name, trips, probe_ok, probe_failed, failures, window, _ in changed:
            fields = {"queue": name, "breaker_failures": failures, "breaker_window_s": window}
            if trips:
                log.warning("queue paused by its circuit breaker", extra=fields)
            elif probe_ok:
                log.info("queue resumed: its circuit breaker's probe succeeded", extra=fields)
            elif probe_failed:
                log.warning("circuit breaker probe failed: the queue stays paused", extra=fields)

    def _limited(self, outcomes: Sequence[Outcome], limit: int) -> FinishResult:
        """With queue settings: the limited queues' claim first (so a busy unlimited queue
        cannot starve them), then the outcomes with the claim of the other queues. When
        outcomes free slots of limited queues, they are written first (a count must not
        see them running), with the other queues' claim keeping room for as many, and the
        limited claim follows at once, whenever it last found nothing."""
        limits = self.limits
        sql, queues = limits.plain_claim(self.claim_sql)
        freed = sum(1 for o in outcomes if o.task.queue in limits.limited)
        if freed and limit:
            rest = self._finish_and_claim(sql, outcomes, max(limit - freed, 0), queues)
            claimed = self._claim_limited(limit - len(rest.claimed))
            limits.claimed_limited(len(claimed))
            return FinishResult(rest.finished, rest.claimed + claimed, rest.cancelled)
        claimed: list[ClaimedTask] = []
        if limit and limits.try_limited():
            claimed = self._claim_limited(limit)
            limits.claimed_limited(len(claimed))
        rest = self._finish_and_claim(sql, outcomes, limit - len(claimed), queues)
        return FinishResult(rest.finished, claimed + rest.claimed, rest.cancelled)

    def _finish_and_claim(
        self, sql: str, outcomes: Sequence[Outcome], limit: int, queues: list[str]
    ) -> FinishResult:
        token = uuid.uuid4()
        ((finished, cancelled, claimed, _),) = self._execute(
            sql,
            {
                "ids": [o.task.id for o in outcomes],
                "tokens": [o.task.token for o in outcomes],
                "errors": [o.error for o in outcomes],
                "delays": [o.delay for o in outcomes],
                "results": [o.result for o in outcomes],
                "notes": [o.note for o in outcomes],
                **_details(outcomes),
                "kept": self.settings.task_attempts_kept,
                "worker": self.worker,
                "token": token,
                "lease": self.settings.worker_lease,
                "limit": limit,
                "queues": queues,
                "restricted": self.limits.restricted,
            },
        )
        return FinishResult(set(finished), _claimed(claimed, token), set(cancelled))

    def _claim_limited(self, limit: int) -> list[ClaimedTask]:
        """Claim from the limited queues (queues_sql.CLAIM_LIMITED): one transaction, their
        settings rows locked for its length."""
        token = uuid.uuid4()
        params = {
            "limited": sorted(self.limits.limited),
            "limit": limit,
            "worker": self.worker,
            "token": token,
            "lease": self.settings.worker_lease,
        }
        with self._connection() as conn, conn.transaction():
            conn.execute(queues_sql.LOCK_LIMITED, params)
            ((claimed, _),) = conn.execute(queues_sql.CLAIM_LIMITED, params).fetchall()
        return _claimed(claimed, token)

    def refresh_limits(self) -> None:
        """Read which queues have settings (worker.limits)."""
        self.limits.update(self._execute(queues_sql.RESTRICTED_QUEUES, {"cap": SKIP_BACKLOG}))

    def claim(self, limit: int) -> list[ClaimedTask]:
        return self.finish_and_claim((), limit).claimed

    def finish(self, outcomes: Sequence[Outcome]) -> set[int]:
        """Record outcomes; returns the ids accepted (the others lost their lease)."""
        return self.finish_and_claim(outcomes, 0).finished

    def set_waiting(self, waiting: bool) -> None:
        """Hold (or drop) the idle lock: task creation notifies only while one is held."""
        self._execute(common_sql.IDLE_LOCK if waiting else common_sql.IDLE_UNLOCK, {})

    def seconds_until_due(self) -> float | None:
        """Seconds until the next pending task is due (<= 0: due now), None: none pending."""
        paused = self.limits.paused
        sql = queue_sql.NEXT_RUN_AT_UNPAUSED if paused else queue_sql.NEXT_RUN_AT
        ((seconds,),) = self._execute(sql, {"paused": paused})
        return None if seconds is None else float(seconds)

    def heartbeat(self, tasks: Sequence[ClaimedTask], *, busy: int = 0) -> dict[int, bool]:
        """Extend the leases and refresh this worker's registry row; returns the ids still
        held, each with whether its cancellation was requested."""
        rows = self._execute(
            queue_sql.HEARTBEAT,
            {
                "ids": [t.id for t in tasks],
                "tokens": [t.token for t in tasks],
                "lease": self.settings.worker_lease,
                "worker": self.worker,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
                "queues": self.queues,
                "capacity": self.settings.worker_concurrency,
                "busy": busy,
                "isolation": self.settings.worker_isolation,
            },
        )
        return {r[0]: r[1] for r in rows}

    def unregister(self) -> None:
        self._execute(queue_sql.UNREGISTER_WORKER, {"worker": self.worker})

    def explain_refused(self, tasks: Sequence[ClaimedTask]) -> dict[int, Refusal]:
        """What became of tasks whose outcome or heartbeat the database refused."""
        rows = self._execute(
            queue_sql.EXPLAIN_REFUSED,
            {"ids": [t.id for t in tasks], "tokens": [t.token for t in tasks]},
        )
        return {r[0]: Refusal(r[0], r[1], r[2], bool(r[3])) for r in rows}

    def give_back(
        self, tasks: Sequence[ClaimedTask], reason: str
    ) -> tuple[set[int], set[int], set[int]]:
        """Return tasks to pending (unstarted ones get their attempt back); notifies.

        Returns the ids given back and, among them, those that ended instead: ``failed``
        (started on their last attempt) and ``cancelled`` (a cancel was requested)."""
        ((given, failed, cancelled, _),) = self._execute(
            queue_sql.GIVE_BACK,
            {
                "ids": [t.id for t in tasks],
                "tokens": [t.token for t in tasks],
                "started": [t.started for t in tasks],
                "reason": reason,
                "kept": self.settings.task_attempts_kept,
            },
        )
        return set(given or ()), set(failed or ()), set(cancelled or ())

    def fire_schedules(self, now: datetime) -> int:
        """Create the tasks of due schedules (``flowforge.stores.schedules``); any worker may. A
        refusal (a schema without schedules yet) is logged hourly and must not stop the
        worker's own work; an outage is raised as for any statement."""
        try:
            return schedule_store.fire_due(self._execute, now)
        except DatabaseRefused as exc:
            if now.timestamp() - getattr(self, "_schedules_warned", 0.0) >= 3600:
                self._schedules_warned = now.timestamp()
                schedule_store.log.warning("schedules not fired: %s (is the schema migrated?)", exc)
            return 0

    def age_cutoff(self, seconds: float) -> datetime:
        """``seconds`` before now by the database's clock."""
        ((cutoff,),) = self._execute(ops_sql.AGE_CUTOFF, {"seconds": seconds})
        return cutoff  # type: ignore[no-any-return]

    def prune_finished(self, cutoff: datetime, limit: int) -> tuple[bool, dict[str, int]]:
        """One batch of retention (``ops_sql.PRUNE_FINISHED``): whether this worker held the
        pruning lock, and the finished tasks deleted by status."""
        rows = self._execute(
            ops_sql.PRUNE_FINISHED,
            {"cutoff": cutoff, "statuses": list(ops_sql.PRUNABLE), "limit": limit},
        )
        return ops_sql.pruned(rows)

    def reap_expired(self, limit: int = 500) -> list[ReapedTask]:
        rows = self._execute(
            queue_sql.REAP_EXPIRED,
            {
                "limit": limit,
                "max_expiries": self.settings.worker_max_lease_expiries,
                "kept": self.settings.task_attempts_kept,
            },
        )
        return [ReapedTask(*r[:7]) for r in rows]
