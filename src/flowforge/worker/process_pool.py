"""The process pool (``WORKER_ISOLATION=process``, the default): WORKER_CONCURRENCY
handler processes forked by a fork server (a clean, single-threaded parent that has the
handlers imported), driven by one thread of the dispatcher's process. That thread hands
tasks to children, reads their outcomes and enforces the rules (both as ``slots.Slots``
decides), watches for children that end, and never waits on one (child_process.py).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from ..config import Settings
from .child_process import ChildProcess
from .executor import Deliver
from .queue import ClaimedTask
from .slots import Slots

log = logging.getLogger("flowforge.worker")


class ProcessPool(Slots):
    """The ``Executor`` of handler processes: the dispatcher's side (other threads) hands
    work over through deques and a wake-up pipe; the pool thread does the rest."""

    children: list[ChildProcess]  # type: ignore[assignment]
    dying: list[ChildProcess]  # type: ignore[assignment]

    def __init__(self, settings: Settings, deliver: Deliver) -> None:
        super().__init__(settings, deliver)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["flowforge.worker.preload"])
        self._incoming: deque[ClaimedTask] = deque()  # from the dispatcher thread
        self._cancels: deque[int] = deque()  # from the dispatcher or listener thread
        self.abandoned = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="flowforge-pool", daemon=True)
        self.started = threading.Event()
        self.done = threading.Event()
        self.on_fail: Callable[[], None] = lambda: None

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
    def _spawn(self) -> ChildProcess:
        c = ChildProcess(self.ctx, self.settings)
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

    def _send(self, c: ChildProcess, message: Any) -> bool:
        sent = c.send(message)
        self._watch_writes(c)
        return sent

    def _watch_writes(self, c: ChildProcess) -> None:
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

    def _read(self, c: ChildProcess) -> bool:
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

    def _reap(self, c: ChildProcess) -> None:
        """A child exited: kill what its handlers left running, read what it wrote last,
        then settle its tasks and slot (``Slots._settle``)."""
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
        self._settle(c, exitcode)
        self._selector.unregister(c.sentinel)
        c.outbuf.clear()  # it will never read it
        self._watch_writes(c)
        c.close()
