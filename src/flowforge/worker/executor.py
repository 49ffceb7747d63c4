"""Executors: where the dispatcher's claimed tasks run, and how their outcomes come back.

``process_pool.ProcessPool`` (``WORKER_ISOLATION=process``, the default): WORKER_CONCURRENCY
handler processes (child.py) forked by a fork server, driven by one thread of the
dispatcher's process; which child gets which task, and what a child's outcome, a timeout
or its death decides, is ``slots.Slots``'.

``thread_pool.ThreadPool`` (``thread``): WORKER_CONCURRENCY threads in the dispatcher's
process, cheaper per task but unprotected: a crash takes the worker down and a timeout can
only set ``task.cancelled``.

Both are ``Executor``s (``make_executor`` picks one): they deliver each outcome through
the ``deliver`` callback, from their own threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..config import Settings
from ..handlers import Handler
from .execute import Detail
from .queue import ClaimedTask

NOT_STARTED = "cancelled by request before it started"

# (task, error or None, result as JSON or None, duration in ms, cancellation note or None,
# what the attempt's history entry adds or None, the run's CPU seconds and the handler
# process's peak RSS in bytes, None when not known: thread isolation, a crash)
Deliver = Callable[
    [
        ClaimedTask,
        str | None,
        str | None,
        float,
        str | None,
        Detail | None,
        float | None,
        int | None,
    ],
    None,
]


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
        from .thread_pool import ThreadPool

        pool = ThreadPool(settings, deliver, handlers)
        pool.on_take = on_take
        return pool
    from .process_pool import ProcessPool

    process_pool = ProcessPool(settings, deliver)
    process_pool.on_fail = on_fail
    return process_pool
