"""The state machine is one table (flowforge.domain.states): the SQL that moves tasks
writes only the moves it lists, docs/state-machine.md is made from it."""

from __future__ import annotations

import re

import pytest

from flowforge.domain import states
from flowforge.domain.states import Actor, Status
from flowforge.stores import common_sql, ops_sql, queue_sql, schedules, stats, tasks_sql

from ..support import ROOT

# The statement (or CTE) through which each actor moves a task. PUT sets %(status)s, a
# value TaskStore.update checks with transition_allowed first.
STATEMENTS = {
    Actor.CANCEL: tasks_sql.CANCEL_TASK,
    Actor.RETRY: tasks_sql.RETRY_TASK,
    Actor.CLAIM: queue_sql._CLAIM_CTE,
    Actor.FINISH: queue_sql._FINISH_CTE,
    Actor.GIVE_BACK: queue_sql.GIVE_BACK,
    Actor.REAPER: queue_sql.REAP_EXPIRED,
}


def _written(sql: str) -> set[str]:
    """The statuses a statement writes: every literal its SET clauses give status, as is
    or as a CASE's THEN/ELSE (conditions on status are not writes)."""
    written: set[str] = set()
    for block in re.findall(r"\bSET\b(.*?)(?:\bFROM\b|\bWHERE\b)", sql, re.DOTALL):
        assignments = r"^\s+status = (CASE\b.*?\bEND|'\w+')"  # one per line, not a condition
        for value in re.findall(assignments, block, re.DOTALL | re.MULTILINE):
            if value.startswith("'"):
                written.add(value.strip("'"))
            else:
                written.update(re.findall(r"\b(?:THEN|ELSE) '(\w+)'", value))
    return written


@pytest.mark.parametrize("actor", list(STATEMENTS), ids=str)
def test_each_statement_makes_the_moves_of_its_actor(actor: Actor) -> None:
    moved = {t.target for t in states.TRANSITIONS if t.actor == actor and t.source != t.target}
    assert _written(STATEMENTS[actor]) == moved


def test_every_status_the_sql_names_is_a_status() -> None:
    modules = (common_sql, queue_sql, tasks_sql, stats, schedules, ops_sql)
    statements = [
        v for m in modules for v in vars(m).values() if isinstance(v, str) and "tasks" in v
    ]
    named: set[str] = set()
    for sql in statements:
        named.update(re.findall(r"\bstatus\s*(?:=|<>)\s*'(\w+)'", sql))
        for listed in re.findall(r"\bstatus IN \(([^)]*)\)", sql):
            named.update(re.findall(r"'(\w+)'", listed))
    assert named  # the parse found them
    assert named <= set(states.STATUSES)


def test_cancel_and_retry_name_the_statuses_the_table_gives_them() -> None:
    assert f"status IN ({states.sql_list(states.CANCELLABLE)})" in tasks_sql.CANCEL_TASK
    assert f"status IN ({states.sql_list(states.RETRYABLE)})" in tasks_sql.RETRY_TASK
    assert states.CANCELLABLE == (Status.PENDING, Status.PROCESSING)
    assert set(states.RETRYABLE) == states.TERMINAL


def test_put_allows_what_the_table_says() -> None:
    assert states.transition_allowed(Status.PENDING, Status.PROCESSING)
    assert states.transition_allowed(Status.FAILED, Status.PENDING)
    assert states.transition_allowed(Status.COMPLETED, Status.COMPLETED)
    assert not states.transition_allowed(Status.PROCESSING, Status.COMPLETED)
    assert not states.transition_allowed(Status.CANCELLED, Status.PENDING)


def test_the_state_machine_page_is_made_from_the_table() -> None:
    page = (ROOT / "docs" / "state-machine.md").read_text()
    assert page == states.markdown(), (
        "docs/state-machine.md is stale: python -m flowforge.domain.states > docs/state-machine.md"
    )
    assert "stateDiagram-v2" in page
