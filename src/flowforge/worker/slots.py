"""The process pool's bookkeeping: which handler process (child) gets which task, and what
a child's message, a timeout, a cancel or its death decides. No processes, pipes or
threads here (``process_pool.ProcessPool`` adds those, ``child_process.ChildProcess`` is
one child): the pool thread alone drives it, and unit tests drive it with fake children.

Tasks go to idle children, several at once to a child while tasks are short (up to
``MAX_PER_CHILD``, so a batch costs one message each way per child), never more than a
child may run before WORKER_MAX_TASKS_PER_CHILD replaces it. The rules:

- a task that outlives its ``timeout`` fails "timed out after N s"; its child gets
  SIGTERM (a traceback in the log), then SIGKILL after WORKER_KILL_GRACE, and a new
  child takes the slot at once;
- a child that dies fails only the task it was running ("worker child died: signal 11
  (SIGSEGV)" / "exit code 1"): it sends each outcome before it starts the next task, so
  those before it are in the pipe; tasks it had not started go to another child;
- a cancelled task's handler sees ``task.cancelled`` (a message to the child's reader
  thread); if it is still running WORKER_CANCEL_GRACE later, its child is terminated;
- a child is replaced after WORKER_MAX_TASKS_PER_CHILD tasks or once its memory passed
  WORKER_MAX_CHILD_MEMORY (it finishes its task first).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections import deque
from time import monotonic
from typing import Any

from .. import logs
from ..config import Settings
from .execute import Detail, cancelled_note
from .executor import NOT_STARTED, Deliver
from .queue import ClaimedTask

log = logging.getLogger("flowforge.worker")

MAX_PER_CHILD = 32  # tasks handed to one child at once, while tasks are short


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "?"
        return f"worker child died: signal {-exitcode} ({name})"
    return f"worker child died: exit code {exitcode}"


class Child:
    """What the pool knows of one handler process (``ChildProcess`` is the process)."""

    pid: int

    def __init__(self, state: Any) -> None:
        self.state = state  # shared with the child: running task id, its start (monotonic) or 0
        self.inflight: deque[ClaimedTask] = deque()  # sent, no outcome yet (run in order)
        self.ran = 0
        self.retiring = False  # told to stop: takes no more work
        self.kill_at: float | None = None  # terminated: SIGKILL then if still alive
        self.ended: ClaimedTask | None = None  # the task it was terminated for
        # When ``_enforce`` must look at this child again (monotonic; inf: never), unless
        # ``dirty``: something that may change its deadline happened (a message from it,
        # tasks or a cancel sent to it). A task starts only after one of those, so between
        # them the last look holds, and the pool thread, which turns once per outcome
        # message, looks only at the children that sent one.
        self.look_at = 0.0
        self.dirty = True

    def running(self) -> tuple[ClaimedTask | None, float]:
        """The task the child is running now and when it started. The child writes the
        id before the start time and clears the start time when the run ends: read the
        start time first, once. Tasks before it in ``inflight`` ran, their outcomes sent
        but not yet read here."""
        started = self.state[1]
        if started:
            task_id = int(self.state[0])
            for task in self.inflight:
                if task.id == task_id:
                    return task, started
        return None, 0.0

    def split(self) -> tuple[list[ClaimedTask], list[ClaimedTask]]:
        """In-flight tasks that have run (up to the last one started), and those not."""
        last = int(self.state[0])
        tasks = list(self.inflight)
        for i, task in enumerate(tasks):
            if task.id == last:
                return tasks[: i + 1], tasks[i + 1 :]
        return [], tasks  # the last one started was reported: none of these started

    def signal_group(self, signum: int) -> None:
        """Signal the child's process group (``ChildProcess``)."""
        raise NotImplementedError

    def traceback(self) -> dict[str, str]:
        """The traceback the child left, as a log field (``ChildProcess``)."""
        return {}

    def usage(self) -> tuple[float | None, int | None]:
        """While it lives: the CPU seconds of the task it runs now, and its peak RSS in
        bytes (``ChildProcess``; None: not known)."""
        return None, None


class Slots:
    """The pool's children and tasks. ``_spawn`` (start a child in a free slot) and
    ``_send`` (a message to a child, False if it is gone) are the process pool's."""

    def __init__(self, settings: Settings, deliver: Deliver) -> None:
        self.settings = settings
        self.size = settings.worker_concurrency
        self.deliver = deliver
        self.children: list[Child] = []  # the slots (WORKER_CONCURRENCY)
        self.dying: list[Child] = []  # terminated or told to stop, not yet gone
        self.waiting: deque[ClaimedTask] = deque()  # claimed, not handed to a child
        self.cancelling: dict[int, float] = {}  # task id -> when its cancel was asked
        self.unstarted: list[ClaimedTask] = []  # given up unstarted while stopping
        self.fast = False
        self.stopping = False
        self._lock = threading.Lock()  # ``unstarted``: the dispatcher takes it
        self._dirty = True  # some child's deadline may have changed (``Child.dirty``)
        self._next_look = 0.0  # the earliest of the children's ``look_at``

    def _spawn(self) -> Child:
        raise NotImplementedError

    def _send(self, c: Child, message: Any) -> bool:
        raise NotImplementedError

    def _cancel(self, task_id: int) -> None:
        if task_id in self.cancelling:
            return
        for task in self.waiting:
            if task.id == task_id:  # no child has it: it ends now, never started
                self.waiting.remove(task)
                self.deliver(task, None, None, 0.0, NOT_STARTED, None, None, None)
                return
        for c in self.children + self.dying:
            if any(t.id == task_id for t in c.inflight):
                self.cancelling[task_id] = monotonic()
                self._send(c, ("cancel", task_id))
                self._touch(c)
                return

    def _assign(self) -> None:
        waiting = self.waiting
        if not waiting or self.stopping:
            return
        free = [c for c in self.children if not c.retiring and not c.inflight]
        if self.fast:  # short tasks: queue a share at each child, refill as they drain
            room = [c for c in self.children if not c.retiring and len(c.inflight) < 2]
            free = room or free
        if not free:
            return
        share = min(MAX_PER_CHILD, math.ceil(len(waiting) / len(free))) if self.fast else 1
        most = self.settings.worker_max_tasks_per_child
        for c in free:
            n = min(share, len(waiting))
            if most:  # never more than it may run before it is replaced
                n = min(n, most - c.ran - len(c.inflight))
            batch = [waiting.popleft() for _ in range(max(n, 0))]
            if not batch:
                break
            if not self._send(c, ("run", [_wire(t) for t in batch])):
                waiting.extendleft(reversed(batch))
                continue
            c.inflight.extend(batch)
            self._touch(c)

    def _handle(self, c: Child, message: tuple[Any, ...]) -> None:
        self._touch(c)  # its next task starts now
        if message[0] == "stopped":
            ids = set(message[1])
            left = [t for t in c.inflight if t.id in ids]
            c.inflight = deque(t for t in c.inflight if t.id not in ids)
            self._requeue(left)
            return
        rss = 0
        for task_id, error, result, duration_ms, memory, note, detail, cpu, peak in message[1]:
            rss = max(rss, memory)
            task = _pop(c.inflight, task_id)
            if task is None:  # already decided here (timed out, or cancelled and ended)
                continue
            task.started = True
            c.ran += 1
            self.cancelling.pop(task_id, None)
            self.deliver(task, error, result, duration_ms, note, detail, cpu, peak)
        limits = self.settings
        if c in self.children and not c.retiring and not self.stopping:
            if limits.worker_max_tasks_per_child and c.ran >= limits.worker_max_tasks_per_child:
                self._retire(c, f"it ran {c.ran} tasks (WORKER_MAX_TASKS_PER_CHILD)")
            elif limits.worker_max_child_memory and rss > limits.worker_max_child_memory:
                self._retire(
                    c,
                    f"its memory reached {rss // 2**20} MiB (WORKER_MAX_CHILD_MEMORY "
                    f"{limits.worker_max_child_memory // 2**20} MiB)",
                )

    def _retire(self, c: Child, why: str) -> None:
        """Replace a child: a new one takes the slot now; the old one finishes its task."""
        log.info("replacing a handler process: %s", why, extra={"pid": c.pid})
        c.retiring = True
        self._send(c, ("stop",))
        self.children.remove(c)
        self.dying.append(c)
        self._spawn()

    def _terminate(self, c: Child, now: float) -> None:
        """SIGTERM now, SIGKILL after the grace (to its process group: what the handler
        started goes too); a new child takes the slot at once."""
        c.signal_group(signal.SIGTERM)
        self._touch(c)
        c.kill_at = now + self.settings.worker_kill_grace
        c.retiring = True
        if c in self.children:
            self.children.remove(c)
            self.dying.append(c)
            if not self.stopping:
                self._spawn()

    def _touch(self, c: Child) -> None:
        c.dirty = self._dirty = True

    def _enforce(self, now: float) -> float | None:
        """Time out running tasks, end ignored cancellations, SIGKILL what outlived its
        grace; returns the seconds until the next such deadline (None: none)."""
        if not self._dirty and now < self._next_look and not self.dying:
            # Nothing changed since the last look: the pool thread turns once per outcome
            # message, and looking at every child each time cost more than the rest.
            return None if self._next_look == math.inf else self._next_look - now
        self._dirty = False
        deadlines: list[float] = []
        grace = self.settings.worker_cancel_grace
        for c in self.children + [c for c in self.dying if c.kill_at is None]:
            if not c.dirty and now < c.look_at:
                if c.look_at != math.inf:
                    deadlines.append(c.look_at)
                continue
            c.dirty = False
            task, started = c.running()
            if task is None:
                # Not started yet (or between tasks): it cannot time out before a full
                # timeout from now; look again then, or at once when it reports.
                c.look_at = now + c.inflight[0].timeout if c.inflight else math.inf
                if c.inflight:
                    deadlines.append(c.look_at)
                continue
            timeout_at = started + task.timeout
            asked = self.cancelling.get(task.id)
            cancel_at = max(asked, started) + grace if asked is not None else math.inf
            if now >= timeout_at or now >= cancel_at:
                self._end_run(c, task, started, now, cancelled=now >= cancel_at)
            else:
                c.look_at = min(timeout_at, cancel_at)
                deadlines.append(c.look_at)
        for c in self.dying:
            if c.kill_at is not None:
                if now >= c.kill_at:
                    c.signal_group(signal.SIGKILL)
                    c.kill_at = None
                else:
                    deadlines.append(c.kill_at)
        self._next_look = min(deadlines, default=math.inf)
        if not deadlines:
            return None
        return max(0.0, self._next_look - monotonic())

    def _end_run(
        self, c: Child, task: ClaimedTask, started: float, now: float, cancelled: bool
    ) -> None:
        """A running task's time is up (its timeout, or the grace after its cancel): its
        outcome is decided here, and its process terminated."""
        c.inflight.remove(task)
        self.cancelling.pop(task.id, None)
        task.started = True
        duration_ms = round((now - started) * 1000, 3)
        grace = self.settings.worker_cancel_grace
        cpu, rss = c.usage()  # before the signal: it lives until then
        detail = Detail(None if cancelled else "timed_out", None, 0.0, signal.SIGTERM)
        with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
            if cancelled:
                log.warning(
                    "the handler ignored task.cancelled for %gs: terminating its process",
                    grace,
                    extra={"pid": c.pid},
                )
                note = (
                    f"cancelled by request: the handler ignored task.cancelled for "
                    f"{grace:g}s; its process was terminated"
                )
                self.deliver(task, None, None, duration_ms, note, detail, cpu, rss)
            else:
                log.warning(
                    "task timed out after %ss: terminating its process",
                    task.timeout,
                    extra={"pid": c.pid, "timeout_s": task.timeout},
                )
                error = f"timed out after {task.timeout} s"
                self.deliver(task, error, None, duration_ms, None, detail, cpu, rss)
        c.ended = task
        self._terminate(c, now)

    def _settle(self, c: Child, exitcode: int | None) -> None:
        """A child is gone and what it wrote was read: charge the task it was running
        (and any that ran but whose outcome died with it), re-queue those it had not
        started, and put a new child in its slot."""
        ran, _ = c.split()
        running = ran[-1] if ran and c.state[1] else None
        reason = death_reason(exitcode)
        fault = c.traceback()
        # Gone: the fork server reaped it (it is not the pool's child: no wait4 rusage here).
        died = Detail("crashed", None, 0.0, -exitcode if exitcode and exitcode < 0 else None)
        if c.ended is not None and fault:  # where the task it was terminated for was
            task = c.ended
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                log.warning(
                    "traceback of the terminated handler",
                    extra={"pid": c.pid, "exit_code": exitcode, **fault},
                )
            fault = {}
        for task in ran:
            c.inflight.remove(task)
            task.started = True
            if task is running:
                error = reason
                with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                    log.error(reason, extra={"pid": c.pid, "exit_code": exitcode, **fault})
            else:  # it ran, and its outcome died with the process before it was sent
                error = f"{reason}, after this task ran but before it reported its outcome"
            note = cancelled_note(error) if task.id in self.cancelling else None
            self.cancelling.pop(task.id, None)
            self.deliver(task, error, None, 0.0, note, died, None, None)
        if running is None and not c.retiring and exitcode != 0:
            log.error("%s while idle", reason, extra={"pid": c.pid, "exit_code": exitcode, **fault})
        if c.inflight:  # never started there
            self._requeue(c.inflight)
            c.inflight.clear()
        if c in self.children:
            self.children.remove(c)
            if not self.stopping:
                self._spawn()
        elif c in self.dying:
            self.dying.remove(c)

    def _stop_children(self) -> None:
        if self.waiting:
            with self._lock:
                self.unstarted.extend(self.waiting)
            self.waiting.clear()
        for c in list(self.children):
            c.retiring = True
            self._send(c, ("stop",))
            self.children.remove(c)
            self.dying.append(c)

    def _requeue(self, tasks: Any) -> None:
        """Tasks a child had not started: to another child, or (stopping) to give back."""
        if self.stopping:
            with self._lock:
                self.unstarted.extend(tasks)
        else:
            self.waiting.extendleft(reversed(tasks))


def _pop(tasks: deque[ClaimedTask], task_id: int) -> ClaimedTask | None:
    if tasks and tasks[0].id == task_id:
        return tasks.popleft()
    for task in tasks:
        if task.id == task_id:
            tasks.remove(task)
            return task
    return None


def _wire(t: ClaimedTask) -> tuple[Any, ...]:
    return (t.id, t.type, t.payload, t.attempt, t.max_attempts, t.request_id, t.queue, t.timeout)
