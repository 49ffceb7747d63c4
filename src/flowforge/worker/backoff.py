"""How long to wait before trying again.

- ``Backoff``: the worker's own retry loops (connecting, the listener's reconnect, a write
  while stopping): waits that start short, double up to a cap, optionally jittered so
  workers that lost the database together do not come back in step.
- ``retry_delay``: when a failed task runs again (TASK_RETRY_BACKOFF, ..._MAX).
"""

from __future__ import annotations

import random


class Backoff:
    """Waits of ``initial`` seconds, then twice the last up to ``cap``, each new one
    multiplied by a random factor within ``1 +/- jitter``; ``reset()`` starts over."""

    __slots__ = ("_delay", "cap", "initial", "jitter", "rng")

    def __init__(
        self,
        initial: float = 0.1,
        cap: float = 5.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.jitter = jitter
        self.rng = rng or random
        self._delay = initial

    def next(self) -> float:
        """The wait before the next try (and the one after it is prepared)."""
        delay = self._delay
        following = min(delay * 2, self.cap)
        if self.jitter:
            following *= self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        self._delay = following
        return delay

    def reset(self) -> None:
        self._delay = self.initial


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    Attempt 1 failed -> about ``base``, attempt 2 -> ``2 * base``, ... never above ``cap``.
    The random half spreads retries of tasks that failed together (an outage) apart.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
