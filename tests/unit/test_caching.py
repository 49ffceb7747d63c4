"""TimedCache: one read per ttl, failures not kept (a fake clock)."""

from __future__ import annotations

import pytest

from flowforge.caching import TimedCache


def test_reads_once_per_ttl_and_never_keeps_a_failure() -> None:
    now = [100.0]
    reads: list[float] = []

    def read() -> int:
        reads.append(now[0])
        if len(reads) == 3:
            raise RuntimeError("database down")
        return len(reads)

    cache = TimedCache(read, ttl=2.0, clock=lambda: now[0])
    assert (cache.get(), cache.get()) == (1, 1)
    now[0] += 1.9
    assert cache.get() == 1
    now[0] += 0.1
    assert cache.get() == 2
    now[0] += 2.0
    with pytest.raises(RuntimeError):
        cache.get()
    assert cache.get() == 4  # the failure was not cached: read again at once
    assert reads == [100.0, 102.0, 104.0, 104.0]
