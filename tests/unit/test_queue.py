"""The worker's waits (Backoff, a failed task's retry_delay) and the sd_notify protocol."""

from __future__ import annotations

import itertools
import random
import socket

import pytest

from flowforge.worker.backoff import Backoff, retry_delay
from flowforge.worker.sdnotify import Notifier


def test_backoff_doubles_up_to_its_cap_jittered_and_starts_over_on_reset() -> None:
    plain = Backoff(0.1, cap=2.0)
    assert [plain.next() for _ in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    plain.reset()
    assert plain.next() == 0.1
    jittered = Backoff(0.1, cap=5.0, jitter=0.2, rng=random.Random(3))
    waits = [jittered.next() for _ in range(12)]
    assert waits[0] == 0.1  # the first wait is exact, the later ones spread
    for before, after in itertools.pairwise(waits):
        assert min(before * 2, 5.0) * 0.8 <= after <= min(before * 2, 5.0) * 1.2
    assert max(waits) <= 5.0 * 1.2 and len(set(waits[5:])) > 1


def test_retry_delay_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 60.0)]:
        delays = [retry_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # really jittered


def test_notifier_speaks_the_sd_notify_protocol(tmp_path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.watchdog_interval == pytest.approx(1.0)
        n.ready("ready: x")
        assert sock.recv(4096).decode().split("\n")[:2] == ["READY=1", "STATUS=ready: x"]
        due = n.watchdog(100.0)
        assert sock.recv(4096) == b"WATCHDOG=1" and due == pytest.approx(101.0)
        assert n.watchdog(100.5) == pytest.approx(101.0)  # not due: nothing sent
        n.stopping("draining")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=draining"
    silent = Notifier({})
    assert silent.watchdog_interval is None and silent.watchdog() is None
    silent.ready("nobody listens")  # outside systemd: a no-op, no error
