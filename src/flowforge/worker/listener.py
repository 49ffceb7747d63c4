"""LISTEN on the task and cancel channels in a thread of its own: wake the worker on a
new task, tell it which task to cancel (the payload is the task's id).

A dedicated connection, because the worker's main connection is busy claiming; the
thread reconnects with backoff by itself and wakes the worker after reconnecting (a
notification sent while it was away is lost, the claim that follows makes up for it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from ..config import Settings
from ..db import DatabaseUnavailable, connect
from ..stores import common_sql
from .backoff import Backoff

log = logging.getLogger(__name__)

CHANNEL = common_sql.NOTIFY_CHANNEL
CANCEL_CHANNEL = common_sql.CANCEL_CHANNEL
QUEUES_CHANNEL = common_sql.QUEUES_CHANNEL


class Listener(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        on_notify: Callable[[], None],
        on_cancel: Callable[[int], None] = lambda task_id: None,
        on_queues: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="flowforge-listener", daemon=True)
        self.settings = settings
        self.on_notify = on_notify
        self.on_cancel = on_cancel
        self.on_queues = on_queues  # a queue's settings changed
        self.listening = threading.Event()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        backoff = Backoff(0.1, cap=5.0, jitter=0.2)
        while not self._stop.is_set():
            try:
                with connect(self.settings, "flowforge-worker-listen") as conn:
                    for channel in (CHANNEL, CANCEL_CHANNEL, QUEUES_CHANNEL):
                        conn.execute(common_sql.listen(channel))
                    self.listening.set()
                    backoff.reset()
                    self.on_queues()  # whatever was sent while not listening
                    self.on_notify()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.channel == CANCEL_CHANNEL:
                                if note.payload.isdigit():
                                    self.on_cancel(int(note.payload))
                            elif note.channel == QUEUES_CHANNEL:
                                self.on_queues()
                            else:
                                self.on_notify()
            except (psycopg.Error, DatabaseUnavailable) as exc:
                if self._stop.is_set():
                    return
                self.listening.clear()
                delay = backoff.next()
                log.warning("listen connection lost: %s; reconnecting in %.1fs", exc, delay)
                self._stop.wait(delay)
