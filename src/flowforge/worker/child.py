"""A handler process (``WORKER_ISOLATION=process``): runs the tasks the dispatcher sends it,
one at a time, and reports each outcome. It never touches the database.

Messages are length-prefixed pickles over two pipes. A reader can parse every message one
``os.read`` brought, so a batch of short tasks costs the dispatcher one read, not one per
message. The dispatcher sends ``("run", [task, ...])``, ``("cancel", id)`` and
``("stop",)``; the child answers ``("done", [(id, error, result, duration_ms, rss,
note, detail, cpu, peak)])`` as each task ends (``detail``: an ``execute.Detail`` when the
handler raised, else None; ``cpu`` the run's CPU seconds and ``peak`` the process's peak
RSS in bytes, plain numbers: an object per task would cost its pickling twice), and
``("stopped", [ids not started])`` before it exits on a stop. Each outcome is in the pipe
before the next task starts: a crash (a segfault, the OOM killer) cannot take the
outcomes of the tasks that ran before it with it, since what a process wrote to a pipe
outlives it.

The child leads a process group of its own: whatever its handlers start is in it, and
the dispatcher kills the group when the child ends (exits, crashes, times out, is
replaced). A process a handler forks has the child's pipes replaced at once (an at-fork
hook), so it can never keep them open after the child is gone.

Which task is running is kept in shared memory (``state``: task id, start time on the
monotonic clock, 0 when idle, and the child's CPU seconds when it started), so the
dispatcher can time a task out (and tell its CPU time) and knows which task a dead child
was running without a message per start.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import queue
import resource
import signal
import struct
import sys
import threading
import time
from typing import Any

_HEADER = struct.Struct("!I")
_PAGE = os.sysconf("SC_PAGE_SIZE")
FAULT_LIMIT = 64 * 1024  # bytes of a traceback file the dispatcher logs
_fault_file: Any = None  # kept open: faulthandler writes to its descriptor


def encode_message(message: Any) -> bytes:
    """A message as it goes down a pipe: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_message(fd: int, message: Any) -> None:
    """Write a whole message to a blocking pipe (the child's side)."""
    view = memoryview(encode_message(message))
    while view:
        view = view[os.write(fd, view) :]


class MessageReader:
    """Splits what arrives on a pipe into messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def read(self) -> list[Any] | None:
        """Messages complete after one read (maybe none); None at end of file. On a
        non-blocking pipe with nothing to read: BlockingIOError."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self.buf += chunk
        out = []
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 4:
            (n,) = _HEADER.unpack_from(buf, pos)
            if size - pos - 4 < n:
                break
            out.append(pickle.loads(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        del buf[:pos]
        return out


def read_fault(path: str) -> str:
    """What a child left in its traceback file (up to ``FAULT_LIMIT`` bytes; the end of a
    longer one is cut off), then removes the file."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            data = fh.read(FAULT_LIMIT + 1)
        os.unlink(path)
    except OSError:
        return ""
    text = data[:FAULT_LIMIT].decode("utf-8", "replace").strip()
    return text + "\n[cut off]" if len(data) > FAULT_LIMIT else text


def _rss() -> int:
    """This process's resident memory in bytes (from /proc: the current, not the peak)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def main(
    inbox: Any,
    outbox: Any,
    state: Any,
    log_level: str,
    log_format: str,
    rss: bool,
    fault_path: str,
) -> None:
    """The child's entry point (multiprocessing target). ``inbox``/``outbox``: connection
    objects whose file descriptors carry the messages; ``state``: the shared array;
    ``rss``: report the memory after each task; ``fault_path``: the file its tracebacks go
    to (a crash's, SIGTERM's)."""
    _lead_a_process_group()
    _tracebacks_to(fault_path)

    from .. import logs

    logs.configure_logging("worker", log_level, log_format=log_format)
    in_fd, out_fd = inbox.fileno(), outbox.fileno()
    _forget_pipes_in_forks(in_fd, out_fd)
    mailbox = _Mailbox()
    threading.Thread(
        target=mailbox.read, args=(in_fd,), name="flowforge-child-reader", daemon=True
    ).start()
    _serve(mailbox, out_fd, state, rss)


def _lead_a_process_group() -> None:
    # A process group of its own, for the dispatcher to kill with whatever the handlers
    # left running (not a session: it stays in the worker's). So Ctrl-C in a terminal no
    # longer reaches it, and SIGINT stays ignored for a signal sent to it by hand: the
    # dispatcher drains, the child finishes its task. SIGTERM (the dispatcher's, at a
    # timeout) ends it, with a traceback of where the handler was; a crash leaves one too.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The dispatcher blocks its stop signals in every thread, and a blocked mask survives
    # fork and exec (the fork server was started from such a thread): unblock SIGTERM.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _tracebacks_to(fault_path: str) -> None:
    # The traceback goes to a file of this child's, not to stderr: faulthandler writes a
    # dump in many small writes, which would interleave with the dispatcher's log lines on
    # the shared stdout. The dispatcher logs the file as one record when the child is gone.
    global _fault_file
    try:
        _fault_file = open(fault_path, "w") if fault_path else None  # noqa: SIM115
    except OSError:
        _fault_file = None
    faulthandler.enable(file=_fault_file or sys.stderr)
    faulthandler.register(signal.SIGTERM, file=_fault_file or sys.stderr, chain=True)


def _forget_pipes_in_forks(in_fd: int, out_fd: int) -> None:
    def forget_pipes() -> None:
        # In a process a handler forks (os.fork, multiprocessing): without this it would
        # hold the pipes open after the child is gone, and the dispatcher's end of file
        # would wait for it. /dev/null takes the descriptors' place rather than a close:
        # the connection objects still name them, and closing a reused number later would
        # close something else.
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (in_fd, out_fd):
                os.dup2(null, fd, inheritable=False)
            os.close(null)

    os.register_at_fork(after_in_child=forget_pipes)


class _Mailbox:
    """What the dispatcher sent, as the reader thread sorts it: tasks to run (``work``;
    None: stop), cancellations, and the running task (to set its ``cancelled``)."""

    def __init__(self) -> None:
        self.work: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self.cancelled: set[int] = set()
        self.current: list[Any] = [0, None]  # the running task's id and context
        self.stopping = threading.Event()

    def read(self, in_fd: int) -> None:
        """The reader thread: until the dispatcher is gone, then the process exits."""
        reader = MessageReader(in_fd)
        while True:
            try:
                messages = reader.read()
            except OSError:
                messages = None
            if messages is None:  # the dispatcher is gone: so is its lease on our task
                os._exit(0)
            for message in messages:
                kind = message[0]
                if kind == "run":
                    for task in message[1]:
                        self.work.put(task)
                elif kind == "cancel":
                    self.cancelled.add(message[1])
                    ctx = self.current[1]
                    if self.current[0] == message[1] and ctx is not None:
                        ctx.cancelled.set()
                elif kind == "stop":
                    self.stopping.set()
                    self.work.put(None)

    def not_started(self, task: tuple[Any, ...] | None) -> list[int]:
        """On a stop: the ids of ``task`` and of every task still queued."""
        left = [] if task is None else [task[0]]
        while True:
            try:
                more = self.work.get_nowait()
            except queue.Empty:
                return left
            if more is not None:
                left.append(more[0])


def _serve(mailbox: _Mailbox, out_fd: int, state: Any, rss: bool) -> None:
    """Run the tasks one at a time until told to stop; each outcome is written as the
    task ends, before the next starts: in the pipe, it survives this process."""
    from .. import logs
    from ..handlers import TaskContext
    from .execute import cancelled_note, run_handler
    from .preload import HANDLERS

    getrusage, RUSAGE_SELF = resource.getrusage, resource.RUSAGE_SELF
    # The process's CPU seconds when the last run ended: a run's CPU time is counted from
    # there (one getrusage a task, not two; what falls between two runs is this loop's
    # few microseconds of bookkeeping and the reader thread's, charged to the next run).
    used = getrusage(RUSAGE_SELF)
    spent = used.ru_utime + used.ru_stime

    work, cancelled, current, stopping = (
        mailbox.work, mailbox.cancelled, mailbox.current, mailbox.stopping
    )  # fmt: skip
    while True:
        task = work.get()
        if task is None or stopping.is_set():
            write_message(out_fd, ("stopped", mailbox.not_started(task)))
            return
        task_id, type_, payload, attempt, max_attempts, request_id, queue_name, timeout = task
        ctx = TaskContext(
            task_id, type_, payload, attempt, max_attempts, request_id, queue_name, timeout
        )
        current[1] = ctx
        current[0] = task_id
        if task_id in cancelled:  # cancelled while it waited here: never started
            cancelled.discard(task_id)
            current[0], current[1] = 0, None
            note = "cancelled by request before it started"
            outcome = (task_id, None, None, 0.0, 0, note, None, None, None)
            write_message(out_fd, ("done", [outcome]))
            continue
        state[2] = spent
        state[0] = task_id
        state[1] = time.monotonic()
        with logs.bind(request_id=request_id, task_id=task_id, attempt=attempt):
            error, result, duration_ms, detail = run_handler(HANDLERS, ctx)
        note = cancelled_note(error) if ctx.is_cancelled() else None
        used = getrusage(RUSAGE_SELF)
        total = used.ru_utime + used.ru_stime
        cpu, spent = round(total - spent, 6), total
        peak = used.ru_maxrss * 1024  # this process's peak so far (KiB on Linux)
        # The outcome first, then "not running": a crash in between leaves the outcome
        # received and nothing charged (the dispatcher reads the outcome before it looks
        # at the state of a dead child).
        memory = _rss() if rss else 0
        outcome = (task_id, error, result, duration_ms, memory, note, detail, cpu, peak)
        write_message(out_fd, ("done", [outcome]))
        state[1] = 0.0
        current[0], current[1] = 0, None
        cancelled.discard(task_id)
