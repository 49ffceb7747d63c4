"""The worker: claims due tasks from PostgreSQL and runs their handlers (``flowforge worker``).

- ``queue``: the database side (claim, finish, heartbeat, give back, reap) over queries.py
- ``runner``: the process (dispatcher, executor threads, graceful stop)
- ``listener``: LISTEN/NOTIFY wake-ups
- ``sdnotify``: systemd readiness, status and watchdog
"""

from __future__ import annotations

from .runner import Worker, identity, run_worker

__all__ = ["Worker", "identity", "run_worker"]
