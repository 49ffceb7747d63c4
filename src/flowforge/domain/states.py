"""The task state machine, as data: every move a task can make, and who makes it.

The stores' SQL names statuses; the WHERE lists of cancel and retry, PUT's re-queue and
finished lists, delete's and cleanup's, and the refusals' wording are built from here, and
tests/unit/test_states.py reads every status the SQL writes or selects and checks it
against ``TRANSITIONS``. docs/state-machine.md is made from this module
(``python -m flowforge.domain.states > docs/state-machine.md``); a test fails when stale.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

# Where a task can no longer go on its own: only a retry (or a re-queue) moves it again.
TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
FINISHED: tuple[Status, ...] = tuple(s for s in Status if s in TERMINAL)  # in Status order
UNFINISHED: tuple[Status, ...] = tuple(s for s in Status if s not in TERMINAL)


class Actor(enum.StrEnum):
    """Who makes a move (and through which statement)."""

    PUT = "client PUT"  # PUT /v1/tasks/{id} (TaskStore.update, UPDATE_TASK)
    CANCEL = "client cancel"  # POST .../cancel (CANCEL_TASK)
    RETRY = "client retry"  # POST .../retry (RETRY_TASK)
    CLAIM = "worker claim"  # the claim half of FINISH_AND_CLAIM
    FINISH = "worker finish"  # an outcome (_FINISH_CTE)
    GIVE_BACK = "worker give back"  # a graceful stop (GIVE_BACK)
    REAPER = "reaper"  # a lease expired, or attempts used up (REAP_EXPIRED)


@dataclass(frozen=True, slots=True)
class Transition:
    source: Status
    target: Status
    actor: Actor
    when: str


P, R, C, F, X = (Status.PENDING, Status.PROCESSING, Status.COMPLETED, Status.FAILED,
                 Status.CANCELLED)  # fmt: skip

TRANSITIONS: tuple[Transition, ...] = (
    Transition(P, R, Actor.PUT, "a client claims it (its lease still expires)"),
    Transition(F, P, Actor.PUT, "a dead letter re-queued: attempts back to 0 (as a retry)"),
    Transition(P, X, Actor.CANCEL, "at once"),
    Transition(R, R, Actor.CANCEL, "flagged (cancel_requested); the worker running it is told"),
    Transition(F, P, Actor.RETRY, "starts over: attempts 0, no result"),
    Transition(X, P, Actor.RETRY, "starts over: attempts 0, no result"),
    Transition(C, P, Actor.RETRY, "starts over: attempts 0, no result"),
    Transition(P, R, Actor.CLAIM, "due, attempts left; an attempt is counted"),
    Transition(R, C, Actor.FINISH, "the handler returned"),
    Transition(R, P, Actor.FINISH, "the attempt failed, attempts left: due after a backoff"),
    Transition(R, F, Actor.FINISH, "the attempt failed, attempts used up"),
    Transition(
        R, P, Actor.FINISH, "the handler raised Snooze(s): due in s, the attempt not counted"
    ),
    Transition(R, F, Actor.FINISH, "the handler raised Discard(why): no more attempts"),
    Transition(R, X, Actor.FINISH, "cancel_requested was set, whatever the run returned"),
    Transition(R, P, Actor.GIVE_BACK, "the worker stops; an unstarted task gets its attempt back"),
    Transition(R, F, Actor.GIVE_BACK, "interrupted on its last attempt"),
    Transition(R, X, Actor.GIVE_BACK, "cancel_requested was set"),
    Transition(R, P, Actor.REAPER, "its lease expired: given back"),
    Transition(R, F, Actor.REAPER, "lease expired on the last attempt, or too many times"),
    Transition(R, X, Actor.REAPER, "lease expired and cancel_requested was set"),
    Transition(P, F, Actor.REAPER, "attempts used up (max_attempts lowered by an edit)"),
)

# A processing task is never deleted (its worker would run on): cancel it first.
UNDELETABLE: frozenset[Status] = frozenset({Status.PROCESSING})


def moves(actor: Actor) -> frozenset[tuple[Status, Status]]:
    return frozenset((t.source, t.target) for t in TRANSITIONS if t.actor == actor)


def sources(actor: Actor, *, table_order: bool = False) -> tuple[Status, ...]:
    """The statuses ``actor`` moves a task from, in Status order (or as TRANSITIONS lists
    them, the order messages name them in)."""
    found = dict.fromkeys(t.source for t in TRANSITIONS if t.actor == actor)
    return tuple(found) if table_order else tuple(s for s in Status if s in found)


def targets(actor: Actor) -> frozenset[Status]:
    return frozenset(t.target for t in TRANSITIONS if t.actor == actor)


# Changes a client may ask for through PUT. Unchanged status is always allowed, so PUT
# stays idempotent; the worker makes the others (only the worker that holds a processing
# task moves it on; a client cancels it instead).
CLIENT_TRANSITIONS: frozenset[tuple[Status, Status]] = moves(Actor.PUT)
CANCELLABLE: tuple[Status, ...] = sources(Actor.CANCEL)
RETRYABLE: tuple[Status, ...] = sources(Actor.RETRY)


def transition_allowed(current: Status, wanted: Status) -> bool:
    return current == wanted or (current, wanted) in CLIENT_TRANSITIONS


def sql_list(statuses: Iterable[str]) -> str:
    """``'a', 'b'``: statuses as SQL literals in Status order, for an ``IN (...)``."""
    wanted = set(statuses)
    return ", ".join(f"'{s}'" for s in Status if s in wanted)


def spoken(statuses: Iterable[str], conjunction: str = "or") -> str:
    """``a, b or c``: statuses as a message names them, in the order given."""
    names = [str(s) for s in statuses]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def markdown() -> str:
    """docs/state-machine.md: a mermaid diagram and the table, made from TRANSITIONS."""
    lines = [
        "# The task state machine",
        "",
        "<!-- Made by `python -m flowforge.domain.states > docs/state-machine.md` from",
        "     src/flowforge/domain/states.py; tests/unit/test_states.py fails when stale. -->",
        "",
        f"A task is one of {', '.join(f'`{s}`' for s in STATUSES)}. A new task is `pending`.",
        "These are every move a task makes, and who makes it. A PUT that keeps the status is",
        f"always allowed; a task in {', '.join(f'`{s}`' for s in UNDELETABLE)} cannot be deleted.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> pending",
    ]
    seen: dict[tuple[Status, Status], list[str]] = {}
    for t in TRANSITIONS:
        seen.setdefault((t.source, t.target), [])
        if t.actor.value not in seen[t.source, t.target]:
            seen[t.source, t.target].append(t.actor.value)
    lines += [f"    {a} --> {b}: {', '.join(who)}" for (a, b), who in seen.items()]
    lines += ["```", "", "| from | to | who | when |", "|---|---|---|---|"]
    lines += [f"| {t.source} | {t.target} | {t.actor} | {t.when} |" for t in TRANSITIONS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
