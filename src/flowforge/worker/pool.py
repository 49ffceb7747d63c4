"""Executors: where the dispatcher's claimed tasks run, and how their outcomes come back.

``ProcessPool`` (``WORKER_ISOLATION=process``, the default): WORKER_CONCURRENCY handler
processes forked by a fork server (a clean, single-threaded parent that has the handlers
imported), driven by one thread of the dispatcher's process. That thread hands tasks to
idle children (several at once to a child while tasks are short, so a batch costs one
message each way per child), reads outcomes, and enforces the rules:

- a task that outlives its ``timeout`` fails "timed out after N s"; its child gets
  SIGTERM (a traceback in the log), then SIGKILL after WORKER_KILL_GRACE, and a new
  child takes the slot at once;
- a child that dies fails only the task it was running ("worker child died: signal 11
  (SIGSEGV)" / "exit code 1"): it sends each outcome before it starts the next task, so
  those before it are in the pipe; tasks it had not started go to another child;
- each child leads a process group; when the child ends (exits, crashes, times out, is
  replaced) the group is killed, so nothing a handler started outlives its process, and
  the pool never waits on such a process: a dead child's pipe is read for what is in it
  now (non-blocking), not to its end of file, which a grandchild may hold back;
- a cancelled task's handler sees ``task.cancelled`` (a message to the child's reader
  thread); if it is still running WORKER_CANCEL_GRACE later, its child is terminated;
- a child is replaced after WORKER_MAX_TASKS_PER_CHILD tasks or once its memory passed
  WORKER_MAX_CHILD_MEMORY (it finishes its task first).

``ThreadPool`` (``thread``): WORKER_CONCURRENCY threads in the dispatcher's process,
cheaper per task but unprotected: a crash takes the worker down and a timeout can only set
``task.cancelled``.

Both are ``Executor``s (``make_executor`` picks one): they deliver each outcome through
the ``deliver`` callback, from their own threads.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import queue as queue_mod
import selectors
import signal
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

from .. import logs
from ..config import Settings
from ..handlers import Handler, TaskContext
from . import child
from .execute import cancelled_note, run_handler
from .queue import ClaimedTask

log = logging.getLogger("flowforge.worker")

MAX_PER_CHILD = 32  # tasks handed to one child at once, while tasks are short
NOT_STARTED = "cancelled by request before it started"

# (task, error or None, result as JSON or None, duration in ms, cancellation note or None)
Deliver = Callable[[ClaimedTask, str | None, str | None, float, str | None], None]


class Executor(Protocol):
    """What the dispatcher asks of the handlers' executor (all of it from its own thread,
    but ``cancel``, which the listener calls too)."""

    def start(self) -> None:
        """Start the executor's threads (and processes)."""

    def submit(self, tasks: list[ClaimedTask]) -> None:
        """Run these (in order, as executors free up)."""

    def queued(self) -> int:
        """Submitted tasks not yet started."""

    def busy(self) -> int:
        """Tasks running now."""

    def cancel(self, task_id: int) -> None:
        """Tell a task's handler to stop (``task.cancelled``); drop it if not started."""

    def set_fast(self, fast: bool) -> None:
        """Tasks are short on average: hand them over in batches."""

    def stop(self) -> None:
        """Start nothing more; running tasks finish."""

    def take_unstarted(self) -> list[ClaimedTask]:
        """The submitted tasks that never started (after ``stop``), to give back."""

    def abandon(self) -> list[ClaimedTask]:
        """End every run now (the shutdown timeout passed); returns the tasks it held that
        had not started. The running ones get no outcome from here."""


def make_executor(
    settings: Settings,
    deliver: Deliver,
    handlers: dict[str, Handler],
    on_take: Callable[[], None],
    on_fail: Callable[[], None] = lambda: None,
) -> Executor:
    """WORKER_ISOLATION's executor. ``on_take`` is called when a thread takes a task (the
    thread pool's cue to claim more); child processes load the handlers themselves.
    ``on_fail``: the process pool's thread failed (a bug), no outcome will come."""
    if settings.worker_isolation == "thread":
        pool = ThreadPool(settings, deliver, handlers)
        pool.on_take = on_take
        return pool
    process_pool = ProcessPool(settings, deliver)
    process_pool.on_fail = on_fail
    return process_pool


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "?"
        return f"worker child died: signal {-exitcode} ({name})"
    return f"worker child died: exit code {exitcode}"


class _Child:
    """One handler process and what the pool knows of it."""

    def __init__(self, ctx: Any, settings: Settings) -> None:
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        outbox_r, outbox_w = ctx.Pipe(duplex=False)
        self.state = ctx.RawArray("d", 2)  # running task id, its start (monotonic) or 0
        # Where the child's tracebacks go (a crash's, SIGTERM's): read once it is gone.
        # No temporary directory to write to: "" and the child writes them to stderr.
        try:
            fd, self.fault_path = tempfile.mkstemp(prefix="flowforge-handler-", suffix=".tb")
            os.close(fd)
        except OSError:
            self.fault_path = ""
        self.proc = ctx.Process(
            target=child.main,
            args=(
                inbox_r,
                outbox_w,
                self.state,
                settings.log_level,
                settings.log_format,
                settings.worker_max_child_memory > 0,
                self.fault_path,
            ),
            name="flowforge-handler",
            daemon=False,
        )
        self.proc.start()
        inbox_r.close()  # the child has its own copies: end of file reaches the right side
        outbox_w.close()
        self._keep = (inbox_w, outbox_r)
        self.to_child = inbox_w.fileno()
        self.from_child = outbox_r.fileno()
        # The pool thread never waits on a child: not for its outcomes, nor for it to take
        # what is sent to it (a handler holding the GIL keeps the child's reader from
        # reading; a grandchild may hold a dead child's end open). What the pipe does not
        # take at once waits in ``outbuf`` until it is writable.
        os.set_blocking(self.from_child, False)
        os.set_blocking(self.to_child, False)
        self.outbuf = bytearray()
        self.writing = False  # to_child is in the pool's selector, for writing
        self.sentinel = self.proc.sentinel
        self.reader = child.MessageReader(self.from_child)
        self.inflight: deque[ClaimedTask] = deque()  # sent, no outcome yet (run in order)
        self.ran = 0
        self.retiring = False  # told to stop: takes no more work
        self.kill_at: float | None = None  # terminated: SIGKILL then if still alive
        self.ended: ClaimedTask | None = None  # the task it was terminated for
        self.eof = False
        self.closed = False
        # When ``_enforce`` must look at this child again (monotonic; inf: never), unless
        # ``dirty``: something that may change its deadline happened (a message from it,
        # tasks or a cancel sent to it). A task starts only after one of those, so between
        # them the last look holds, and the pool thread, which turns once per outcome
        # message, looks only at the children that sent one.
        self.look_at = 0.0
        self.dirty = True

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[return-value]

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
        """Signal the child's process group: the child and whatever its handlers started
        (the child alone while it has not made its group yet, just started)."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # (these check that it was not reaped first)
            with contextlib.suppress(Exception):
                self.proc.kill() if signum == signal.SIGKILL else self.proc.terminate()
        except PermissionError:  # not ours any more (the number was reused)
            pass

    def send(self, message: Any) -> bool:
        """Send without waiting: what the pipe does not take now stays in ``outbuf`` for
        ``flush``. False if the child is gone (its sentinel tells the rest)."""
        data = child.encode_message(message)
        if self.outbuf:  # in order, after what waits
            self.outbuf += data
            return True
        try:
            n = os.write(self.to_child, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        if n < len(data):
            self.outbuf += memoryview(data)[n:]
        return True

    def flush(self) -> None:
        """Write what waits in ``outbuf``, as far as the pipe takes it (all of it dropped
        when the child is gone)."""
        try:
            n = os.write(self.to_child, self.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self.outbuf.clear()
            return
        del self.outbuf[:n]

    def traceback(self) -> dict[str, str]:
        """The traceback the child left (as a log field), if any; removes its file (the
        pool reads it once, when it reaps the child; ``abandon`` removes the rest)."""
        text = child.read_fault(self.fault_path)
        return {"traceback": text} if text else {}

    def close(self) -> None:
        self.closed = True
        for conn in self._keep:
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(Exception):
            self.proc.close()


class ProcessPool:
    def __init__(self, settings: Settings, deliver: Deliver) -> None:
        self.settings = settings
        self.size = settings.worker_concurrency
        self.deliver = deliver
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["flowforge.worker.preload"])
        self.children: list[_Child] = []  # the slots (WORKER_CONCURRENCY)
        self.dying: list[_Child] = []  # terminated or told to stop, not yet gone
        self.waiting: deque[ClaimedTask] = deque()  # claimed, not handed to a child
        self._incoming: deque[ClaimedTask] = deque()  # from the dispatcher thread
        self._cancels: deque[int] = deque()  # from the dispatcher or listener thread
        self.cancelling: dict[int, float] = {}  # task id -> when its cancel was asked
        self.unstarted: list[ClaimedTask] = []  # given up unstarted while stopping
        self.fast = False
        self.stopping = False
        self.abandoned = False
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="flowforge-pool", daemon=True)
        self.started = threading.Event()
        self.done = threading.Event()
        self.on_fail: Callable[[], None] = lambda: None
        self._dirty = True  # some child's deadline may have changed (``_Child.dirty``)
        self._next_look = 0.0  # the earliest of the children's ``look_at``

    # --- the dispatcher's side (other threads) --------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self.started.wait()

    def submit(self, tasks: list[ClaimedTask]) -> None:
        self._incoming.extend(tasks)
        self._wake()

    def queued(self) -> int:
        """Claimed tasks no child has yet (the dispatcher claims more below a low water)."""
        return len(self._incoming) + len(self.waiting)

    def busy(self) -> int:
        return sum(1 for c in self.children if c.state[1])

    def cancel(self, task_id: int) -> None:
        self._cancels.append(task_id)
        self._wake()

    def set_fast(self, fast: bool) -> None:
        self.fast = fast

    def stop(self) -> None:
        """Take no more work: children finish their task and exit; what they had not
        started (and what no child had) is collected by ``take_unstarted``."""
        self.stopping = True
        self._wake()

    def take_unstarted(self) -> list[ClaimedTask]:
        with self._lock:
            out, self.unstarted = self.unstarted, []
        return out

    def abandon(self) -> list[ClaimedTask]:
        """Stop now (the shutdown timeout passed): kill every child; returns the tasks
        they held but had not started. Their running tasks get no outcome from here."""
        self.abandoned = True
        self._wake()
        self._thread.join(5)
        unstarted = self.take_unstarted()
        for c in self.children + self.dying:
            unstarted.extend(c.split()[1])
            c.signal_group(signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.unlink(c.fault_path)
        return unstarted

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # --- the pool thread -------------------------------------------------------------------
    def _spawn(self) -> _Child:
        c = _Child(self.ctx, self.settings)
        self.children.append(c)
        self._dirty = True
        self._selector.register(c.sentinel, selectors.EVENT_READ, (c, "sentinel"))
        self._selector.register(c.from_child, selectors.EVENT_READ, (c, "read"))
        return c

    def _run(self) -> None:
        # Children are forked by the fork server: start it (and the first children) here,
        # with the dispatcher's stop signals blocked in this thread as in every other.
        try:
            for _ in range(self.size):
                self._spawn()
        finally:
            self.started.set()
        log.info(
            "handler processes started",
            extra={"pids": [c.pid for c in self.children], "isolation": "process"},
        )
        try:
            self._loop()
        except Exception:  # a bug here must not leave the dispatcher waiting forever
            log.exception("handler pool failed")
            self.abandoned = True
            self.on_fail()
        finally:
            self.done.set()

    def _loop(self) -> None:
        # One epoll set kept up to date (children come and go), not a new one per wait:
        # the loop turns once per batch of outcomes, which may be once per task.
        select = self._selector.select
        while not self.abandoned:
            self._take_incoming()
            if self.stopping:
                self._stop_children()
                if not self.children and not self.dying:
                    return
            self._assign()
            timeout = self._enforce(monotonic())
            for key, _ in select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                c, kind = key.data
                if c.closed:
                    continue  # reaped earlier in this round
                if kind == "sentinel":
                    self._reap(c)
                elif kind == "read":
                    if not c.eof:
                        self._read(c)
                else:
                    c.flush()
                    self._watch_writes(c)

    def _send(self, c: _Child, message: Any) -> bool:
        sent = c.send(message)
        self._watch_writes(c)
        return sent

    def _watch_writes(self, c: _Child) -> None:
        """Wait for the child's pipe to take more while something waits for it, not after."""
        if c.outbuf and not c.writing and not c.closed:
            self._selector.register(c.to_child, selectors.EVENT_WRITE, (c, "write"))
            c.writing = True
        elif c.writing and not c.outbuf:
            self._selector.unregister(c.to_child)
            c.writing = False

    def _take_incoming(self) -> None:
        incoming = self._incoming
        while incoming:
            self.waiting.append(incoming.popleft())
        cancels = self._cancels
        while cancels:
            self._cancel(cancels.popleft())

    def _cancel(self, task_id: int) -> None:
        if task_id in self.cancelling:
            return
        for task in self.waiting:
            if task.id == task_id:  # no child has it: it ends now, never started
                self.waiting.remove(task)
                self.deliver(task, None, None, 0.0, NOT_STARTED)
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

    def _read(self, c: _Child) -> bool:
        """Handle what the child sent; False when there was nothing to read (or it ended)."""
        try:
            messages = c.reader.read()
        except BlockingIOError:
            return False
        except OSError:
            messages = None
        except Exception:  # not the protocol: something the handler wrote into the pipe
            log.exception("a handler process sent an unreadable message: killing it",
                          extra={"pid": c.pid})  # fmt: skip
            c.signal_group(signal.SIGKILL)
            messages = None
        if messages is None:
            c.eof = True
            self._selector.unregister(c.from_child)
            return False
        for message in messages:
            self._handle(c, message)
        return True

    def _handle(self, c: _Child, message: tuple[Any, ...]) -> None:
        self._touch(c)  # its next task starts now
        if message[0] == "stopped":
            ids = set(message[1])
            left = [t for t in c.inflight if t.id in ids]
            c.inflight = deque(t for t in c.inflight if t.id not in ids)
            if self.stopping:
                with self._lock:
                    self.unstarted.extend(left)
            else:
                self.waiting.extendleft(reversed(left))
            return
        rss = 0
        for task_id, error, result, duration_ms, memory, note in message[1]:
            rss = max(rss, memory)
            task = _pop(c.inflight, task_id)
            if task is None:  # already decided here (timed out, or cancelled and ended)
                continue
            task.started = True
            c.ran += 1
            self.cancelling.pop(task_id, None)
            self.deliver(task, error, result, duration_ms, note)
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

    def _retire(self, c: _Child, why: str) -> None:
        """Replace a child: a new one takes the slot now; the old one finishes its task."""
        log.info("replacing a handler process: %s", why, extra={"pid": c.pid})
        c.retiring = True
        self._send(c, ("stop",))
        self.children.remove(c)
        self.dying.append(c)
        self._spawn()

    def _terminate(self, c: _Child, now: float) -> None:
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

    def _touch(self, c: _Child) -> None:
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
                c.inflight.remove(task)
                self.cancelling.pop(task.id, None)
                task.started = True
                duration_ms = round((now - started) * 1000, 3)
                with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                    if now >= cancel_at:
                        log.warning(
                            "the handler ignored task.cancelled for %gs: terminating its process",
                            grace,
                            extra={"pid": c.pid},
                        )
                        note = (
                            f"cancelled by request: the handler ignored task.cancelled for "
                            f"{grace:g}s; its process was terminated"
                        )
                        self.deliver(task, None, None, duration_ms, note)
                    else:
                        log.warning(
                            "task timed out after %ss: terminating its process",
                            task.timeout,
                            extra={"pid": c.pid, "timeout_s": task.timeout},
                        )
                        error = f"timed out after {task.timeout} s"
                        self.deliver(task, error, None, duration_ms, None)
                c.ended = task
                self._terminate(c, now)
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

    def _reap(self, c: _Child) -> None:
        """A child exited: kill what its handlers left running, read what it wrote last,
        charge its running task, re-queue the tasks it had not started, and put a new
        child in its slot."""
        c.proc.join(1)  # at once: its sentinel said so (the fork server reaped it by pid)
        exitcode = c.proc.exitcode
        # Before a new child can take its number: a group outlives its leader while any
        # member lives, and the kernel reuses no number a group still has.
        c.signal_group(signal.SIGKILL)
        # Everything it wrote before it went is in the pipe now. Not to the end of file: a
        # process it forked (by a means the child's at-fork hook missed) may hold the
        # write end open, even after the kill above, until it is reaped by whoever
        # adopted it.
        while not c.eof and self._read(c):
            pass
        if not c.eof:
            self._selector.unregister(c.from_child)
        ran, _ = c.split()
        running = ran[-1] if ran and c.state[1] else None
        reason = death_reason(exitcode)
        fault = c.traceback()
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
            self.deliver(task, error, None, 0.0, note)
        if running is None and not c.retiring and exitcode != 0:
            log.error("%s while idle", reason, extra={"pid": c.pid, "exit_code": exitcode, **fault})
        if c.inflight:  # never started there
            if self.stopping:
                with self._lock:
                    self.unstarted.extend(c.inflight)
            else:
                self.waiting.extendleft(reversed(c.inflight))
            c.inflight.clear()
        if c in self.children:
            self.children.remove(c)
            if not self.stopping:
                self._spawn()
        elif c in self.dying:
            self.dying.remove(c)
        self._selector.unregister(c.sentinel)
        c.outbuf.clear()  # it will never read it
        self._watch_writes(c)
        c.close()

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


class ThreadPool:
    """Handlers in WORKER_CONCURRENCY threads of the worker process (``thread``)."""

    def __init__(self, settings: Settings, deliver: Deliver, handlers: dict[str, Handler]) -> None:
        self.settings = settings
        self.deliver = deliver
        self.handlers = handlers
        self.work: queue_mod.SimpleQueue[ClaimedTask | None] = queue_mod.SimpleQueue()
        self.contexts: dict[int, TaskContext] = {}  # running tasks' contexts
        self.started_at: dict[int, tuple[float, ClaimedTask]] = {}
        self.cancelled: set[int] = set()
        self.threads: list[threading.Thread] = []
        self.on_take: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._unstarted: list[ClaimedTask] = []

    def start(self) -> None:
        for i in range(self.settings.worker_concurrency):
            thread = threading.Thread(target=self._execute, name=f"flowforge-exec-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)
        watch = threading.Thread(target=self._watch, name="flowforge-timeouts", daemon=True)
        watch.start()

    def submit(self, tasks: list[ClaimedTask]) -> None:
        put = self.work.put
        for task in tasks:
            put(task)

    def queued(self) -> int:
        return self.work.qsize()

    def busy(self) -> int:
        return len(self.contexts)

    def set_fast(self, fast: bool) -> None:
        pass

    def cancel(self, task_id: int) -> None:
        self.cancelled.add(task_id)
        ctx = self.contexts.get(task_id)
        if ctx is not None:
            ctx.cancelled.set()

    def stop(self) -> None:
        while True:
            try:
                task = self.work.get_nowait()
            except queue_mod.Empty:
                break
            if task is not None:
                self._unstarted.append(task)
        for _ in self.threads:
            self.work.put(None)  # each executor exits after its current task

    def take_unstarted(self) -> list[ClaimedTask]:
        out, self._unstarted = self._unstarted, []
        return out

    def abandon(self) -> list[ClaimedTask]:
        self._stop.set()
        return self.take_unstarted()

    def _execute(self) -> None:
        get = self.work.get
        on_take = self.on_take
        contexts = self.contexts
        while True:
            task = get()
            if task is None:
                return
            task.started = True
            on_take()
            if task.id in self.cancelled:
                self.cancelled.discard(task.id)
                self.deliver(task, None, None, 0.0, NOT_STARTED)
                continue
            ctx = TaskContext(
                task.id,
                task.type,
                task.payload,
                task.attempt,
                task.max_attempts,
                task.request_id,
                task.queue,
                task.timeout,
            )
            contexts[task.id] = ctx
            self.started_at[task.id] = (monotonic(), task)
            with logs.bind(request_id=task.request_id, task_id=task.id, attempt=task.attempt):
                error, result, duration_ms = run_handler(self.handlers, ctx)
            del contexts[task.id]
            timed_out = self.started_at.pop(task.id, None) is None
            note = None
            if task.id in self.cancelled:
                self.cancelled.discard(task.id)
                note = cancelled_note(error)
            elif timed_out and ctx.is_cancelled():
                error = f"timed out after {task.timeout} s (thread isolation: asked to stop)"
            self.deliver(task, error, result, duration_ms, note)

    def _watch(self) -> None:
        """Thread isolation cannot stop a thread: at its timeout a task's ``cancelled`` is
        set, and its attempt fails as timed out when the handler returns."""
        while not self._stop.wait(0.25):
            now = monotonic()
            for task_id, (started, task) in list(self.started_at.items()):
                if now - started >= task.timeout:
                    ctx = self.contexts.get(task_id)
                    self.started_at.pop(task_id, None)
                    if ctx is not None:
                        ctx.cancelled.set()
