"""Which queues have settings, as this worker last read them (``queue_settings``: at start,
when a PUT's notification arrives, and every second by the ``QueueSettings`` duty), and
which claim that asks for.

With none (the usual case) the worker claims with the statement it always ran: no queue
setting costs anything until one is set. With some, the plain claim leaves them out
(``queue <> ALL(restricted)``, or the named queues without them), paused queues are not
claimed at all, and limited ones (concurrency, rate) are claimed by their own statement,
which locks their settings rows and claims only what the limits leave
(``stores.queues_sql.CLAIM_LIMITED``). A setting changed meanwhile is seen within a
second; the limits themselves hold in the database, whatever a worker believes.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic
from typing import Any

from ..stores import queue_sql

# A limited claim that found nothing (a full queue, a spent window, no due task) is tried
# again after this long, not on every batch of a busy worker: the lock it takes makes
# all claimers of the queue wait their turn.
LIMITED_RETRY = 0.02  # seconds
# Restricted queues holding this many pending tasks in all make the claim of the others
# find their queues first (queue_sql.FINISH_AND_CLAIM_SKIPPING) rather than step over
# that backlog in the scan of every queue: measured here, a claim of 50 took 3.2 ms
# either way beside 100 restricted tasks, 3.2 ms against 14.7 ms beside 50,000, and
# finding the queues cost 4.6 ms against 3.2 ms with 20 queues and no backlog.
SKIP_BACKLOG = 1_000


class Limits:
    """The restricted queues among this worker's (``queues`` None: it takes every queue)."""

    __slots__ = (
        "backlog", "breakers", "limited", "paused", "queues", "restricted", "retry_at",
        "tripped", "unrestricted",
    )  # fmt: skip

    def __init__(self, queues: list[str] | None) -> None:
        self.queues = queues
        self.restricted: list[str] = []  # every queue with settings: not in the plain claim
        self.paused: list[str] = []
        self.limited: frozenset[str] = frozenset()  # not paused, with a limit
        self.unrestricted: list[str] = list(queues or ())  # a named-queue worker's others
        self.breakers: frozenset[str] = frozenset()  # with a breaker: failures are reported
        self.tripped: frozenset[str] = frozenset()  # paused (by its breaker?): probes reported
        self.retry_at = 0.0
        self.backlog = 0  # pending tasks of the restricted queues (counted up to SKIP_BACKLOG)

    def update(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Take RESTRICTED_QUEUES' rows (name, paused, limited, breaker, probe due, backlog)."""
        queues = self.queues
        rows = list(rows)
        mine = [row[:5] for row in rows if queues is None or row[0] in queues]
        restricted = [name for name, paused, limited, _, _ in mine if paused or limited]
        limited = frozenset(
            name for name, paused, lim, _, probe in mine if (lim and not paused) or probe
        )
        self.backlog = sum(r[5] for r in rows if r[0] in restricted)
        if limited - self.limited:
            self.retry_at = 0.0  # a new limited queue (or a probe due): claim it at once
        self.restricted = restricted
        self.paused = [name for name, paused, _, _, probe in mine if paused and not probe]
        self.limited = limited
        self.breakers = frozenset(name for name, _, _, breaker, _ in mine if breaker)
        self.tripped = frozenset(name for name, paused, _, b, _ in mine if paused and b)
        self.unrestricted = [q for q in self.queues or () if q not in restricted]

    def try_limited(self) -> bool:
        """Whether this claim should also claim from the limited queues."""
        return bool(self.limited) and monotonic() >= self.retry_at

    def claimed_limited(self, n: int) -> None:
        self.retry_at = 0.0 if n else monotonic() + LIMITED_RETRY

    def plain_claim(self, claim_sql: str) -> tuple[str, list[str]]:
        """The statement (and named queues) of the claim of the other queues."""
        if self.queues is None:
            if self.backlog >= SKIP_BACKLOG:
                return queue_sql.FINISH_AND_CLAIM_SKIPPING, []
            return queue_sql.FINISH_AND_CLAIM_UNRESTRICTED, []
        return claim_sql, self.unrestricted
