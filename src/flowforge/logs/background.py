"""The background writer (``configure_logging(background=True)``, the worker): records and
``log_fields``' lines go through a queue to a thread that formats and writes them."""

from __future__ import annotations

import atexit
import logging
import queue
import signal
from logging.handlers import QueueHandler, QueueListener
from typing import Any, NamedTuple

from .formatters import JsonFormatter
from .handlers import StreamLineHandler


class Line(NamedTuple):
    """What ``log_fields`` hands the background writer instead of a LogRecord."""

    name: str
    levelno: int
    message: str
    fields: dict[str, Any]
    created: float


class Enqueue(QueueHandler):
    """Hands records to a QueueListener thread as they are: that thread formats and writes
    them. (The stock ``prepare`` formats here, in the caller's thread, and folds a
    traceback into the message.) The bound context is copied on by the filter first.
    ``msg % args`` is applied in that thread too: log values, not objects that change."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class Writer(QueueListener):
    """The background writer: records as QueueListener handles them, and the lines
    ``log_fields`` queued, formatted here with the time they were logged. Lines for
    stdout are flushed when the queue runs empty, not one by one: the worker logs a
    batch of outcomes at once, and one write for the batch saves a system call a task.
    (journald takes one entry per call whatever we do.)"""

    def handle(self, record: Any) -> None:
        if not isinstance(record, Line):
            super().handle(record)
            return
        handler = self.handlers[0]
        try:
            formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
            line = formatter.format_line(
                record.name, logging.getLevelName(record.levelno), record.message,
                record.fields, record.created,
            )  # fmt: skip
            if isinstance(handler, StreamLineHandler):
                handler.emit_line(
                    record.name, record.levelno, line, record.fields, flush=self.queue.empty()
                )
            else:
                handler.emit_line(record.name, record.levelno, line, record.fields)  # type: ignore[attr-defined]
        except Exception:  # the generic path, which reports its own failure on stderr
            fallback = logging.LogRecord(
                record.name, record.levelno, "", 0, record.message, None, None
            )
            fallback.__dict__.update(record.fields)
            fallback.created = record.created
            handler.handle(fallback)

    def stop(self) -> None:
        super().stop()
        self.handlers[0].flush()  # a line queued just before the stop


def start_writer(handler: logging.Handler) -> Writer:
    """A background writer to ``handler``, started (and stopped at exit, its queue written
    out first)."""
    writer = Writer(queue.SimpleQueue(), handler)
    # The thread must never take a signal: the worker blocks SIGTERM/SIGINT in its
    # threads and waits for them in one (sigwait); a thread started earlier with them
    # unblocked would take SIGTERM's default action and kill the process.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        writer.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    atexit.register(writer.stop)
    return writer
