"""Logging: one JSON object per line, with the request and task context on every line.

Under systemd (``JOURNAL_STREAM`` names our stdout) lines go to journald natively: the
JSON line is MESSAGE, and the context (``request_id`` -> ``REQUEST_ID``, ``task_id`` ->
``TASK_ID``, ...) become journal fields, so ``journalctl REQUEST_ID=<id>`` finds every
line of one request in the API and the worker. Elsewhere the same JSON goes to stdout.

Import from ``flowforge.logs``: the modules inside are its layout (CONTRIBUTING.md), not
its interface. This one holds what ``configure_logging`` installed, which ``log_fields``
reads.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import time
from typing import Any

from .background import Enqueue, Line, Writer, start_writer
from .fields import ContextFilter, _context, bind, bound, encodable, own_fields
from .formatters import JsonFormatter, TextFormatter, json_formatter, make_formatter
from .handlers import JournalHandler, StreamLineHandler, journal_fields, stdout_is_journal

__all__ = [
    "ContextFilter",
    "JournalHandler",
    "JsonFormatter",
    "StreamLineHandler",
    "TextFormatter",
    "bind",
    "bound",
    "configure_logging",
    "encodable",
    "journal_fields",
    "json_formatter",
    "log_fields",
    "make_formatter",
    "own_fields",
    "stdout_is_journal",
]

_listener: Writer | None = None  # the background writer, when there is one
# The handler configure_logging installed, when ``log_fields`` may write to it directly
# (JSON lines); in the background mode, the queue handler in front of it too.
_direct: StreamLineHandler | JournalHandler | None = None
_enqueue: Enqueue | None = None


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """What ``logger.log(level, message, extra=fields)`` writes, the same line with the same
    fields (the bound context included), for a line on a hot path: the API's access line,
    once per request, and the worker's outcome line, once per task. With JSON lines from
    ``configure_logging`` (and nothing else attached), it formats the fields straight to a
    line: no LogRecord, no filter or handler chain, which cost about half of the access
    line's 24 us in the API's profile (stdout and journald alike). In the background mode
    (the worker) the fields go to the writer thread, which formats them. Otherwise it is
    that ``logger.log`` call."""
    if not logger.isEnabledFor(level):
        return
    direct = _direct
    if direct is None or logger.handlers or logger.filters or not logger.propagate:
        logger.log(level, message, extra=fields)
        return
    handlers = logging.root.handlers
    background = _enqueue is not None and handlers == [_enqueue]
    if not background and handlers != [direct]:
        logger.log(level, message, extra=fields)
        return
    context = _context.get()
    if context:  # as ContextFilter adds them: after the fields, which win
        fields = {**fields, **{k: v for k, v in context.items() if k not in fields}}
    if background:
        _enqueue.queue.put_nowait(Line(logger.name, level, message, fields, time.time()))  # type: ignore[union-attr]
        return
    formatter: JsonFormatter = direct.formatter  # type: ignore[assignment]
    try:
        line = formatter.format_line(logger.name, logging.getLevelName(level), message, fields)
        direct.emit_line(logger.name, level, line, fields)
    except Exception:  # as a handler does: a failed line never fails the request
        logger.log(level, message, extra=fields)


def configure_logging(
    service: str, level: str = "info", *, background: bool = False, log_format: str = "json"
) -> None:
    """Route every logger (ours, gunicorn's, the libraries') through one handler: JSON
    lines (or, ``log_format="text"``, readable ones); under systemd to journald with the
    context as journal fields whichever the format.

    ``background``: format and write in a thread of its own (the worker: its dispatcher
    thread logs one line per task, about 27 us each, and is what limits its throughput;
    the thread does that work while the dispatcher waits on PostgreSQL). Lines still
    queued are written at exit. Not for processes that fork after this call.
    """
    handler = _output(service, log_format)
    global _listener, _direct, _enqueue
    _direct = _enqueue = None
    if log_format != "text":
        _direct = handler  # type: ignore[assignment]
    if _listener is not None:  # configured again (tests): flush and end the old writer
        atexit.unregister(_listener.stop)
        _listener.stop()
        _listener = None
    if background:
        _listener = start_writer(handler)
        handler = _enqueue = Enqueue(_listener.queue)
    handler.addFilter(ContextFilter())  # in the caller's thread: the context is there
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python's documented logging optimisations: no caller frame walk, thread or process
    # lookups per record; our lines carry neither (a few us on every access line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Alembic announces each of its plug-ins at INFO on every run.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _output(service: str, log_format: str) -> logging.Handler:
    """The handler the lines end in, with the formatter ``log_format`` names: journald when
    systemd connected stdout to it (and its library is here), else stdout."""
    # A handler's print() writes to this stdout (the worker's, or a handler process's
    # inherited one): with Python's strict errors a lone surrogate in it raised
    # UnicodeEncodeError in the handler and failed a task that had done its work. Escaped
    # instead (\ud800), as stderr already writes them and as the log lines keep them.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    handler: logging.Handler
    if stdout_is_journal():
        try:
            handler = JournalHandler(service)
        except ImportError:  # no journal library here: JSON on stdout still reaches it
            handler = StreamLineHandler(sys.stdout)
    else:
        handler = StreamLineHandler(sys.stdout)
    handler.setFormatter(make_formatter(service, log_format))
    return handler
