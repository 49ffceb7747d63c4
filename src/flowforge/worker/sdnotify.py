"""systemd's readiness protocol (sd_notify): a datagram to ``$NOTIFY_SOCKET``.

Ten lines of standard library instead of a binding: the protocol is one datagram of
``KEY=value`` lines. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """READY=1, STOPPING=1, STATUS=..., and WATCHDOG=1 pings at half the watchdog period."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping twice per period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval: float | None = int(usec) / 2e6 if enabled else None
        self._next_ping = 0.0

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            pass  # the service manager went away; nothing useful to do about it

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self, now: float | None = None) -> float | None:
        """Ping if due; returns when the next ping is due (None: no watchdog)."""
        if self.watchdog_interval is None:
            return None
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self.send("WATCHDOG=1")
            self._next_ping = now + self.watchdog_interval
        return self._next_ping
