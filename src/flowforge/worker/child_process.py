"""One handler process as the pool thread sees it: the process (child.py is its inside),
its two pipes, its traceback file and its process group.

Each child leads a process group; when the child ends (exits, crashes, times out, is
replaced) the pool kills the group, so nothing a handler started outlives its process, and
the pool never waits on such a process: a dead child's pipe is read for what is in it now
(non-blocking), not to its end of file, which a grandchild may hold back. Nor does it wait
for a child to take what is sent to it: what the pipe does not take at once waits in
``outbuf`` until it is writable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from typing import Any

from ..config import Settings
from . import child
from .slots import Child


class ChildProcess(Child):
    """One handler process and what the pool knows of it."""

    def __init__(self, ctx: Any, settings: Settings) -> None:
        super().__init__(ctx.RawArray("d", 3))
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        outbox_r, outbox_w = ctx.Pipe(duplex=False)
        # Where the child's tracebacks go (a crash's, SIGTERM's): read once it is gone.
        # No temporary directory to write to: "" and the child writes them to stderr.
        try:
            fd, self.fault_path = tempfile.mkstemp(prefix="flowforge-handler-", suffix=".tb")
            os.close(fd)
        except OSError:
            self.fault_path = ""
        self.proc = ctx.Process(
            target=child.main,
            args=(
                inbox_r,
                outbox_w,
                self.state,
                settings.log_level,
                settings.log_format,
                settings.worker_max_child_memory > 0,
                self.fault_path,
            ),
            name="flowforge-handler",
            daemon=False,
        )
        self.proc.start()
        inbox_r.close()  # the child has its own copies: end of file reaches the right side
        outbox_w.close()
        self._keep = (inbox_w, outbox_r)
        self.to_child = inbox_w.fileno()
        self.from_child = outbox_r.fileno()
        # The pool thread never waits on a child: not for its outcomes, nor for it to take
        # what is sent to it (a handler holding the GIL keeps the child's reader from
        # reading; a grandchild may hold a dead child's end open). What the pipe does not
        # take at once waits in ``outbuf`` until it is writable.
        os.set_blocking(self.from_child, False)
        os.set_blocking(self.to_child, False)
        self.outbuf = bytearray()
        self.writing = False  # to_child is in the pool's selector, for writing
        self.sentinel = self.proc.sentinel
        self.reader = child.MessageReader(self.from_child)
        self.eof = False
        self.closed = False

    @property
    def pid(self) -> int:
        return self.proc.pid  # type: ignore[return-value]

    def signal_group(self, signum: int) -> None:
        """Signal the child's process group: the child and whatever its handlers started
        (the child alone while it has not made its group yet, just started)."""
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # (these check that it was not reaped first)
            with contextlib.suppress(Exception):
                self.proc.kill() if signum == signal.SIGKILL else self.proc.terminate()
        except PermissionError:  # not ours any more (the number was reused)
            pass

    def send(self, message: Any) -> bool:
        """Send without waiting: what the pipe does not take now stays in ``outbuf`` for
        ``flush``. False if the child is gone (its sentinel tells the rest)."""
        data = child.encode_message(message)
        if self.outbuf:  # in order, after what waits
            self.outbuf += data
            return True
        try:
            n = os.write(self.to_child, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        if n < len(data):
            self.outbuf += memoryview(data)[n:]
        return True

    def flush(self) -> None:
        """Write what waits in ``outbuf``, as far as the pipe takes it (all of it dropped
        when the child is gone)."""
        try:
            n = os.write(self.to_child, self.outbuf)
        except BlockingIOError:
            return
        except OSError:
            self.outbuf.clear()
            return
        del self.outbuf[:n]

    def traceback(self) -> dict[str, str]:
        """The traceback the child left (as a log field), if any; removes its file (the
        pool reads it once, when it reaps the child; ``abandon`` removes the rest)."""
        text = child.read_fault(self.fault_path)
        return {"traceback": text} if text else {}

    def usage(self) -> tuple[float | None, int | None]:
        """The CPU seconds of the task it runs now (its total from /proc less what the
        child noted at the task's start) and its peak RSS (VmHWM); None if unreadable."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{self.pid}/status", "rb") as fh:
                hwm = next(line for line in fh if line.startswith(b"VmHWM:"))
        except (OSError, IndexError, StopIteration):
            return None, None
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks - self.state[2]
        return round(max(cpu, 0.0), 6), int(hwm.split()[1]) * 1024

    def close(self) -> None:
        self.closed = True
        for conn in self._keep:
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(Exception):
            self.proc.close()
