"""The worker: claims due tasks from PostgreSQL and runs their handlers (``flowforge worker``).

- ``queue``: the database side (claim, finish, heartbeat, give back, reap) over stores/queue_sql.py
- ``runner``: the process (the dispatcher in the main thread, the signal thread)
- ``dispatcher``: the main loop and its deadlines; ``recording``: writing outcomes with
  the next claim; ``shutdown``: the graceful stop; ``prefetch``: how far ahead it claims
- ``duties``: the maintenance duties (heartbeat, reaper, schedules), one module each
- ``executor``: what the dispatcher asks of the handlers' executor, and which one runs:
  ``process_pool`` (child processes: ``slots`` decides, ``child_process`` is one of them,
  ``child`` its inside) or ``thread_pool``
- ``execute``, ``preload``: one handler call, the fork server
- ``backoff``: waits between retries (the worker's own, and a failed task's)
- ``listener``: LISTEN/NOTIFY wake-ups
- ``metrics``: the worker's Prometheus metrics
- ``sdnotify``: systemd readiness, status and watchdog
"""

from __future__ import annotations

from .dispatcher import Worker, identity
from .runner import run_worker

__all__ = ["Worker", "identity", "run_worker"]
