"""The thread pool (``WORKER_ISOLATION=thread``): handlers in WORKER_CONCURRENCY threads of
the worker process. Cheaper per task than a process, but unprotected: a crash takes the
worker down, and a timeout can only set ``task.cancelled``."""

from __future__ import annotations

import queue as queue_mod
import threading
from collections.abc import Callable
from time import monotonic

from .. import logs
from ..config import Settings
from ..handlers import Handler, TaskContext
from .execute import Detail, cancelled_note, run_handler
from .executor import NOT_STARTED, Deliver
from .queue import ClaimedTask


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
                self.deliver(task, None, None, 0.0, NOT_STARTED, None, None, None)
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
                error, result, duration_ms, detail = run_handler(self.handlers, ctx)
            del contexts[task.id]
            timed_out = self.started_at.pop(task.id, None) is None
            note = None
            if task.id in self.cancelled:
                self.cancelled.discard(task.id)
                note = cancelled_note(error)
            elif timed_out and ctx.is_cancelled():
                error = f"timed out after {task.timeout} s (thread isolation: asked to stop)"
                detail = Detail("timed_out", detail.traceback if detail else None)
            self.deliver(task, error, result, duration_ms, note, detail, None, None)

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
