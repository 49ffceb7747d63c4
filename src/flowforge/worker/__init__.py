"""The worker: claims due tasks from PostgreSQL and runs their handlers (``flowforge worker``).

- ``queue``: the database side (claim, finish, heartbeat, give back, reap) over queries.py
- ``runner``: the process (dispatcher, its deadlines, graceful stop, the signal thread)
- ``prefetch``: how far ahead the dispatcher claims
- ``pool``: the executors that run the handlers (child processes or threads)
- ``child``, ``execute``, ``preload``: a handler process, one handler call, the fork server
- ``backoff``: waits between retries (the worker's own, and a failed task's)
- ``listener``: LISTEN/NOTIFY wake-ups
- ``metrics``: the worker's Prometheus metrics
- ``sdnotify``: systemd readiness, status and watchdog
"""

from __future__ import annotations

from .runner import Worker, identity, run_worker

__all__ = ["Worker", "identity", "run_worker"]
