"""The state machine is one table (flowforge.domain.states): the SQL that moves tasks
writes only the moves it lists, docs/state-machine.md is made from it."""

from __future__ import annotations

import re

import pytest

from flowforge.cli import cleanup
from flowforge.domain import states
from flowforge.domain.states import Actor, Status
from flowforge.stores import common_sql, ops_sql, queue_sql, schedules, stats, tasks_sql
from flowforge.stores.task_types import REFUSALS

from ..support import ROOT

# The statement (or CTE) through which each actor moves a task. PUT sets %(status)s, a
# value TaskStore.update checks with transition_allowed first.
STATEMENTS = {
    Actor.CANCEL: tasks_sql.CANCEL_TASK,
    Actor.RETRY: tasks_sql.RETRY_TASK,
    Actor.CLAIM: queue_sql.CLAIM_CTE,
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


# The statements that pick the rows each actor moves (the claim picks them in its due query).
ROW_FILTERS = {
    **STATEMENTS,
    Actor.CLAIM: queue_sql._DUE_ANY_QUEUE + queue_sql._DUE_NAMED_QUEUES,
}


def _filtered(sql: str) -> set[str]:
    """The statuses a statement's row conditions name (WHERE/AND status = 'x' or IN (...)),
    not an aggregate's FILTER (WHERE ...), which reads the rows written."""
    named: set[str] = set()
    condition = r"(?<!FILTER \()\b(?:WHERE|AND)\s+(?:\w+\.)?status\s*(=\s*'\w+'|IN\s*\([^)]*\))"
    for found in re.findall(condition, sql):
        named.update(re.findall(r"'(\w+)'", found))
    return named


@pytest.mark.parametrize("actor", list(ROW_FILTERS), ids=str)
def test_each_statement_moves_tasks_from_the_statuses_of_its_actor(actor: Actor) -> None:
    assert _filtered(ROW_FILTERS[actor]) == set(states.sources(actor))


@pytest.mark.parametrize("actor", list(STATEMENTS), ids=str)
def test_a_case_on_status_makes_a_move_of_its_actor(actor: Actor) -> None:
    pairs = re.findall(r"\bWHEN (?:\w+\.)?status = '(\w+)' THEN '(\w+)'", STATEMENTS[actor])
    assert set(pairs) <= {(str(a), str(b)) for a, b in states.moves(actor)}


def test_cancel_tells_the_worker_of_the_status_it_flags() -> None:
    (flagged,) = {t.source for t in states.TRANSITIONS if t.actor == Actor.CANCEL
                  and t.source == t.target}  # fmt: skip
    assert f"WHERE c.status = '{flagged}'" in tasks_sql.CANCEL_TASK


def test_put_and_delete_name_the_statuses_the_table_gives_them() -> None:
    requeue = {str(a) for a, b in states.CLIENT_TRANSITIONS if b == Status.PENDING}
    assert f"status IN ({states.sql_list(requeue)}) AND %(status)s = 'pending'" in (
        tasks_sql.UPDATE_TASK
    )
    assert tasks_sql.UPDATE_TASK.count("status IN ('failed') AND %(status)s = 'pending'") == 4
    assert "%(status)s IN ('completed', 'failed', 'cancelled') AND" in tasks_sql.UPDATE_TASK
    assert "%(status)s IN ('pending', 'processing') THEN NULL" in tasks_sql.UPDATE_TASK
    assert "status NOT IN ('processing')" in tasks_sql.DELETE_TASK
    assert cleanup.FINISHED == ("completed", "failed", "cancelled")


def test_refusals_say_what_the_table_says() -> None:
    # A cancel refused says "it has already finished": true of every status it refuses.
    assert set(Status) - set(states.CANCELLABLE) <= states.TERMINAL
    retry = REFUSALS[Status.PENDING].format("processing")
    assert retry == (
        "a processing task cannot be retried: only failed, cancelled or completed ones"
    )
    named = re.findall(r"\b(\w+)\b", retry.split("only ")[1])
    assert set(named) - {"or", "ones"} == set(states.RETRYABLE)
    assert REFUSALS["deleted"].format(*states.UNDELETABLE) == (
        "a processing task cannot be deleted while a worker runs it: cancel it first"
    )


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
