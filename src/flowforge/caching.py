"""A value read at most once per ``ttl`` seconds per process (shared by its threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class TimedCache(Generic[T]):
    """``get()`` returns ``read()``'s last value while it is younger than ``ttl``; one
    thread reads a fresh one while the others wait for it (no stampede). A failed read is
    not cached: the next call tries again."""

    def __init__(
        self, read: Callable[[], T], ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._value: tuple[float, T] | None = None

    def get(self) -> T:
        with self._lock:
            now = self.clock()
            if self._value is None or now - self._value[0] >= self.ttl:
                self._value = (now, self.read())
            return self._value[1]
