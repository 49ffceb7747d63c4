"""Recording outcomes: the dispatcher's write of a batch (the finished outcomes with the
next claim riding along), the fallback that writes them one by one when the database or
the driver refuses one, and the log line and metrics of each outcome."""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

from .. import logs
from ..config import Settings
from ..db import DatabaseRefused, DatabaseUnavailable, first_line
from ..handlers import Handler, HandlerSpecError, spec_of
from .backoff import retry_delay
from .execute import storable
from .executor import Executor
from .metrics import WorkerMetrics
from .prefetch import Prefetch
from .queue import ClaimedTask, FinishResult, Outcome, TaskQueue

if TYPE_CHECKING:
    from .dispatcher import Deadlines

log = logging.getLogger("flowforge.worker")

RECHECK_DELAY = 0.02  # longer than a creator's commit (fsync) takes


def outcome_name(outcome: Outcome, accepted: bool, cancelled: bool = False) -> str:
    """How a run ended, as the metrics name it (worker.metrics.OUTCOMES)."""
    if not accepted:
        return "lease_lost"
    if cancelled:
        return "cancelled"
    detail = outcome.detail
    if detail is not None and detail.kind in ("snoozed", "discarded"):
        return detail.kind
    if outcome.error is None:
        return "completed"
    return "failed" if outcome.task.attempt >= outcome.task.max_attempts else "retried"


class Recording:
    """The dispatcher's writes (a part of ``dispatcher.Worker``)."""

    settings: Settings
    name: str
    queue: TaskQueue
    handlers: dict[str, Handler]
    held: dict[int, ClaimedTask]
    pending_outcomes: list[Outcome]
    executor: Executor
    prefetch: Prefetch
    metrics: WorkerMetrics
    deadlines: Deadlines
    drained: bool
    waiting: bool
    notified: bool

    def _retry_delay(self, task: ClaimedTask) -> float:
        """How long a failed attempt waits before the next (0: it was the last): the
        handler's declared backoff, else TASK_RETRY_BACKOFF (also when the declared one
        fails: its tasks must not retry at once, nor never)."""
        if task.attempt >= task.max_attempts:
            return 0.0
        try:
            declared = spec_of(self.handlers.get(task.type)).delay_after(task.attempt)
        except HandlerSpecError as exc:
            log.warning(
                "handler backoff unusable, TASK_RETRY_BACKOFF used: %s",
                exc,
                extra={"task_id": task.id, "type": task.type},
            )
            declared = None
        if declared is not None:
            return declared
        settings = self.settings
        return retry_delay(
            task.attempt, settings.task_retry_backoff, settings.task_retry_backoff_max
        )

    def _log_outcome(
        self, outcome: Outcome, accepted: bool, cancelled: bool, refused: str | None
    ) -> None:
        task = outcome.task
        with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
            fields: dict[str, object] = {"type": task.type, "duration_ms": outcome.duration_ms}
            detail = outcome.detail
            if detail is not None and detail.traceback:  # the whole of it, in this record
                fields["traceback"] = detail.traceback
            kind = detail.kind if detail is not None else None
            if accepted and not cancelled and kind in ("snoozed", "discarded"):
                self._log_handler_control(outcome, kind, fields)
            elif not accepted:
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

    @staticmethod
    def _log_handler_control(outcome: Outcome, kind: str | None, fields: dict[str, object]) -> None:
        """The log line of a Snooze or a Discard raised by the handler."""
        if kind == "snoozed":
            log.info(
                "task snoozed for %gs: back to pending, the attempt not counted",
                outcome.delay,
                extra={**fields, "outcome": "snoozed", "snooze_s": outcome.delay},
            )
        else:
            log.warning(
                "task discarded by its handler: failed, no more attempts",
                extra={**fields, "outcome": "discarded", "error": outcome.error},
            )

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
        return Outcome(task, error, self._retry_delay(task), outcome.duration_ms, None, None, None)

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
