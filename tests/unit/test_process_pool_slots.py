"""The process pool's bookkeeping (worker/slots.py), with fake children: which child gets
which task (one each, or batches of up to MAX_PER_CHILD while tasks are short, never past
WORKER_MAX_TASKS_PER_CHILD), what an outcome message decides, and what a dead child's
tasks become (the running one failed, the unstarted ones re-queued in order, a new child
in its slot). No process, pipe or database: the pool thread's I/O is process_pool.py's."""

from __future__ import annotations

import signal
import uuid
from time import monotonic
from typing import Any

import pytest

from flowforge.config import load_settings
from flowforge.worker.queue import ClaimedTask
from flowforge.worker.slots import MAX_PER_CHILD, Child, Slots


class FakeChild(Child):
    """A child that records what it is sent and signalled; ``alive`` False: sends fail."""

    def __init__(self, pid: int) -> None:
        super().__init__([0.0, 0.0, 0.0])
        self.pid = pid
        self.sent: list[Any] = []
        self.signals: list[int] = []
        self.alive = True
        self.fault = ""

    def signal_group(self, signum: int) -> None:
        self.signals.append(signum)

    def traceback(self) -> dict[str, str]:
        return {"traceback": self.fault} if self.fault else {}

    def start(self, task: ClaimedTask, at: float) -> None:
        """What the child writes to the shared state as it starts a task."""
        self.state[0] = task.id
        self.state[1] = at

    def report(self, *tasks: ClaimedTask) -> tuple[Any, ...]:
        """The "done" message for these tasks, succeeded."""
        return ("done", [(t.id, None, None, 1.0, 0, None, None, 0.001, 2**20) for t in tasks])


class Pool(Slots):
    def __init__(self, **env: str) -> None:
        settings = load_settings(
            {"DATABASE_URL": "postgresql://unused/db", "WORKER_METRICS_PORT": "0", **env}
        )
        self.delivered: list[tuple[int, str | None, str | None]] = []
        self.details: list[Any] = []
        self.usages: list[tuple[float | None, int | None]] = []
        super().__init__(settings, self._record)
        self.pids = iter(range(100, 10_000))
        for _ in range(self.size):
            self._spawn()

    def _record(
        self,
        task: ClaimedTask,
        error: Any,
        result: Any,
        ms: float,
        note: Any,
        detail: Any,
        cpu: float | None,
        peak: int | None,
    ) -> None:
        self.delivered.append((task.id, error, note))
        self.details.append(detail)
        self.usages.append((cpu, peak))

    def _spawn(self) -> FakeChild:
        c = FakeChild(next(self.pids))
        self.children.append(c)
        return c

    def _send(self, c: Child, message: Any) -> bool:
        assert isinstance(c, FakeChild)
        if not c.alive:
            return False
        c.sent.append(message)
        return True

    def child(self, i: int) -> FakeChild:
        c = self.children[i]
        assert isinstance(c, FakeChild)
        return c


def tasks(first: int, n: int, timeout: int = 900) -> list[ClaimedTask]:
    return [
        ClaimedTask(i, "noop", {}, 1, 3, None, uuid.uuid4(), timeout=timeout)
        for i in range(first, first + n)
    ]


def ids(tasks: Any) -> list[int]:
    return [t.id for t in tasks]


def test_one_task_to_each_idle_child_while_tasks_are_long() -> None:
    pool = Pool(WORKER_CONCURRENCY="3")
    pool.waiting.extend(tasks(1, 5))
    pool._assign()
    assert [ids(c.inflight) for c in pool.children] == [[1], [2], [3]]
    assert ids(pool.waiting) == [4, 5]
    assert pool.child(0).sent[0][0] == "run" and pool.child(0).sent[0][1][0][0] == 1
    pool._assign()  # nobody is free: nothing moves
    assert ids(pool.waiting) == [4, 5]
    pool._handle(pool.child(1), pool.child(1).report(pool.child(1).inflight[0]))
    pool._assign()
    assert ids(pool.child(1).inflight) == [4] and ids(pool.waiting) == [5]
    assert pool.delivered == [(2, None, None)] and pool.child(1).ran == 1
    assert pool.usages == [(0.001, 2**20)]  # the child's CPU seconds and peak, as sent


def test_short_tasks_go_in_shares_of_at_most_max_per_child_and_are_refilled() -> None:
    pool = Pool(WORKER_CONCURRENCY="2")
    pool.fast = True
    pool.waiting.extend(tasks(1, 100))
    pool._assign()
    first, second = pool.child(0), pool.child(1)
    assert ids(first.inflight) == list(range(1, 1 + MAX_PER_CHILD))
    assert ids(second.inflight) == list(range(1 + MAX_PER_CHILD, 1 + 2 * MAX_PER_CHILD))
    assert len(first.sent) == 1  # the whole share in one message
    assert len(pool.waiting) == 100 - 2 * MAX_PER_CHILD
    # The first child drains to one task left: it is refilled, the other (busy) is not.
    pool._handle(first, first.report(*list(first.inflight)[:-1]))
    pool._assign()
    assert len(first.inflight) == 1 + MAX_PER_CHILD and len(second.inflight) == MAX_PER_CHILD
    # A small rest is shared out evenly.
    pool = Pool(WORKER_CONCURRENCY="4")
    pool.fast = True
    pool.waiting.extend(tasks(1, 6))
    pool._assign()
    assert [ids(c.inflight) for c in pool.children] == [[1, 2], [3, 4], [5, 6], []]


def test_no_child_is_sent_more_than_it_may_run_before_it_is_replaced() -> None:
    pool = Pool(WORKER_CONCURRENCY="1", WORKER_MAX_TASKS_PER_CHILD="5")
    pool.fast = True
    pool.waiting.extend(tasks(1, 20))
    pool._assign()
    c = pool.child(0)
    assert ids(c.inflight) == [1, 2, 3, 4, 5]
    pool._handle(c, c.report(*list(c.inflight)[:4]))  # 4 ran, 1 left: may run 1 more
    pool._assign()
    assert ids(c.inflight) == [5]  # 4 ran and 1 is sent: nothing more may go to it
    pool._handle(c, c.report(c.inflight[0]))  # the fifth: replaced
    assert c.retiring and c in pool.dying and c not in pool.children
    assert c.sent[-1] == ("stop",)
    pool._assign()
    fresh = pool.child(0)
    assert fresh is not c and ids(fresh.inflight) == [6, 7, 8, 9, 10]


def test_retiring_children_get_nothing_and_a_failed_send_puts_the_batch_back() -> None:
    pool = Pool(WORKER_CONCURRENCY="2")
    pool.fast = True
    pool.child(0).retiring = True
    pool.child(1).alive = False
    pool.waiting.extend(tasks(1, 4))
    pool._assign()
    assert ids(pool.waiting) == [1, 2, 3, 4]  # in order, at the front
    assert not pool.child(0).inflight and not pool.child(1).inflight


def test_a_cancel_of_a_task_no_child_has_ends_it_unstarted() -> None:
    pool = Pool(WORKER_CONCURRENCY="1")
    pool.waiting.extend(tasks(1, 2))
    pool._assign()
    pool._cancel(2)
    assert pool.delivered == [(2, None, "cancelled by request before it started")]
    pool._cancel(1)  # the child has it: told, and timed for the grace
    assert pool.child(0).sent[-1] == ("cancel", 1) and 1 in pool.cancelling


def test_a_dead_child_fails_its_running_task_and_its_unstarted_ones_go_to_another() -> None:
    pool = Pool(WORKER_CONCURRENCY="2")
    pool.fast = True
    pool.waiting.extend(tasks(1, 8))
    pool._assign()
    c = pool.child(0)
    assert ids(c.inflight) == [1, 2, 3, 4]
    pool._handle(c, c.report(c.inflight[0]))  # 1 reported before the crash
    c.start(c.inflight[0], monotonic())  # running 2 when it segfaulted
    pool.waiting.extend(tasks(9, 1))  # claimed meanwhile
    pool._settle(c, -signal.SIGSEGV)
    assert pool.delivered == [(1, None, None), (2, "worker child died: signal 11 (SIGSEGV)", None)]
    assert ids(pool.waiting) == [3, 4, 9]  # never started there: first in line, in order
    assert c not in pool.children and len(pool.children) == 2  # a new child in its slot
    assert not c.inflight


def test_a_task_that_ran_but_whose_outcome_died_with_its_child_fails_saying_so() -> None:
    pool = Pool(WORKER_CONCURRENCY="1")
    pool.fast = True
    pool.waiting.extend(tasks(1, 3))
    pool._assign()
    c = pool.child(0)
    c.start(c.inflight[0], monotonic())
    c.state[1] = 0.0  # 1 ended (the child clears the start), its outcome never arrived
    pool.cancelling[1] = monotonic()  # and it had been cancelled
    pool._settle(c, 1)
    error = "worker child died: exit code 1, after this task ran but before it reported its outcome"
    note = f"cancelled by request: the handler raised after task.cancelled was set: {error}"
    assert pool.delivered == [(1, error, note)]
    assert ids(pool.waiting) == [2, 3] and not pool.cancelling


def test_a_child_that_dies_while_the_pool_stops_gives_its_tasks_back_and_is_not_replaced() -> None:
    pool = Pool(WORKER_CONCURRENCY="1")
    pool.fast = True
    pool.waiting.extend(tasks(1, 3))
    pool._assign()
    pool.waiting.extend(tasks(4, 1))
    pool.stopping = True
    pool._stop_children()
    c = pool.dying[0]
    assert isinstance(c, FakeChild) and c.sent[-1] == ("stop",) and not pool.children
    pool._handle(c, ("stopped", [2, 3]))  # it finished 1 (no outcome yet), did not start these
    assert ids(pool.unstarted) == [4, 2, 3] and ids(c.inflight) == [1]
    c.start(c.inflight[0], monotonic())
    pool._settle(c, -signal.SIGKILL)
    assert pool.delivered == [(1, "worker child died: signal 9 (SIGKILL)", None)]
    assert not pool.children and not pool.dying


def test_a_retired_child_that_exits_cleanly_is_just_removed() -> None:
    pool = Pool(WORKER_CONCURRENCY="1")
    c = pool.child(0)
    pool._retire(c, "a test")
    assert pool.dying == [c] and len(pool.children) == 1
    pool._settle(c, 0)
    assert not pool.dying and pool.delivered == [] and len(pool.children) == 1


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_task_past_its_time_ends_here_and_its_child_is_terminated_then_killed(
    cancelled: bool,
) -> None:
    pool = Pool(WORKER_CONCURRENCY="1", WORKER_KILL_GRACE="2s", WORKER_CANCEL_GRACE="5s")
    pool.waiting.extend(tasks(1, 1, timeout=10))
    pool._assign()
    c = pool.child(0)
    now = monotonic()
    c.start(c.inflight[0], now)
    assert pool._enforce(now) == pytest.approx(10, abs=0.5)  # its timeout, from now
    if cancelled:
        pool._cancel(1)
        pool.cancelling[1] = now
        pool._enforce(now + 1)
        later = now + 5  # the cancel's grace
        note = (
            "cancelled by request: the handler ignored task.cancelled for 5s; "
            "its process was terminated"
        )
        expected = (1, None, note)
    else:
        later = now + 10
        expected = (1, "timed out after 10 s", None)
    assert pool.delivered == []
    pool._enforce(later)
    assert pool.delivered == [expected]
    assert c.signals == [signal.SIGTERM] and c.kill_at == later + 2 and c.ended is not None
    assert c in pool.dying and pool.child(0) is not c  # a new child took the slot
    pool._enforce(later + 1)
    assert c.signals == [signal.SIGTERM]
    pool._enforce(later + 2)
    assert c.signals == [signal.SIGTERM, signal.SIGKILL]
    c.fault = "Traceback: where the handler was"
    pool._settle(c, -signal.SIGTERM)  # what it was terminated for is decided already
    assert pool.delivered == [expected] and not pool.dying
