"""flowforge_enqueue(): a task created in the caller's own transaction (migration 0015),
used as an application would, from psycopg, with a real worker."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from flowforge import migrate
from flowforge.domain.fields import TASK_FIELDS, defaults
from flowforge.stores.common_sql import IDLE_LOCK_KEY, NOTIFY_CHANNEL

from ..support import (
    add_task,
    create_database,
    final_row,
    handler_runs,
    make_settings,
    statuses,
    task_row,
)

ENQUEUE = "SELECT flowforge_enqueue(%s, %s, %s)"
# Only a notification wakes the worker in time: its own poll would come after the test.
QUIET = {"WORKER_POLL_INTERVAL": "30s"}


def _idle_worker(spawn):
    w = spawn(**QUIET)
    w.wait_for("worker ready")
    return w


def test_defaults_are_the_field_tables(db: psycopg.Connection) -> None:
    with db.transaction(force_rollback=True):
        task_id = db.execute("SELECT flowforge_enqueue('  only a title  ')").fetchone()[0]
        row = task_row(db, task_id)
    wanted = defaults(TASK_FIELDS)
    assert {name: row[name] for name in ("type", "payload", "queue", "priority")} == {
        name: wanted[name] for name in ("type", "payload", "queue", "priority")
    }
    assert row["title"] == "only a title"  # stripped, as POST /v1/tasks strips it
    assert row["status"] == "pending" and row["run_at"] == row["created_at"]  # due now
    assert row["description"] == wanted["description"]
    # Every argument after the title has a default, written in the function itself.
    nargs, ndefaults = db.execute(
        "SELECT pronargs, pronargdefaults FROM pg_proc WHERE proname = 'flowforge_enqueue'"
    ).fetchone()
    assert (nargs, ndefaults) == (6, 5)


def test_it_wakes_workers_on_the_api_channel(db: psycopg.Connection) -> None:
    """The migration writes the channel and the idle lock's key as literals (frozen
    history): they must still be the ones the workers use."""
    (definition,) = db.execute("SELECT pg_get_functiondef('flowforge_enqueue'::regproc)").fetchone()
    assert f"pg_notify('{NOTIFY_CHANNEL}'" in definition
    assert definition.count(str(IDLE_LOCK_KEY)) == 2


def test_a_rolled_back_transaction_leaves_no_task(
    db: psycopg.Connection, database_url: str, spawn, tmp_path
) -> None:
    runs = tmp_path / "runs"
    _idle_worker(spawn)
    with psycopg.connect(database_url) as app:  # autocommit off: the application's transaction
        enqueued = app.execute(ENQUEUE, ("mine", "count", Jsonb({"file": str(runs)}))).fetchone()[0]
        assert task_row(db, enqueued) == {}  # invisible to others until it commits
        # The worker is awake and claiming meanwhile: another task runs, this one does not.
        other = add_task(db, "count", {"file": str(runs)}, notify=True)
        assert final_row(db, other)["status"] == "completed"
        app.rollback()
    assert task_row(db, enqueued) == {}
    assert statuses(db) == {"completed": 1}
    assert [run[0] for run in handler_runs(runs)] == [str(other)]


def test_a_committed_transaction_runs_the_task(
    db: psycopg.Connection, database_url: str, spawn, tmp_path
) -> None:
    runs = tmp_path / "runs"
    w = _idle_worker(spawn)
    with psycopg.connect(database_url) as app:
        with app.transaction():
            app.execute("CREATE TEMP TABLE orders (id int)")  # the application's own write
            app.execute("INSERT INTO orders VALUES (1)")
            enqueued = app.execute(
                ENQUEUE, ("ship order 1", "count", Jsonb({"file": str(runs)}))
            ).fetchone()[0]
            assert task_row(db, enqueued) == {}
        # Committed: the NOTIFY goes out now and wakes the idle worker (its poll is 30 s).
        row = final_row(db, enqueued, timeout=15)
    assert row["status"] == "completed" and row["type"] == "count"
    assert [run[0] for run in handler_runs(runs)] == [str(enqueued)]
    assert w.proc.poll() is None


@pytest.mark.parametrize(
    ("call", "constraint"),
    [
        ("flowforge_enqueue('t', queue => 'Bad Queue!')", "tasks_queue_check"),
        ("flowforge_enqueue('t', priority => 101)", "tasks_priority_check"),
        ("flowforge_enqueue('   ')", "tasks_title_check"),
        ("flowforge_enqueue('t', payload => '[1]')", "tasks_payload_check"),
    ],
)
def test_bad_arguments_raise_and_insert_nothing(
    db: psycopg.Connection, call: str, constraint: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        db.execute(f"SELECT {call}")
    assert refused.value.diag.constraint_name == constraint
    assert statuses(db) == {}


def test_downgrade_drops_the_function(admin_url: str) -> None:
    url = create_database(admin_url, "flowforge_enqueue_down")
    settings = make_settings(url)
    migrate.upgrade(settings, "0015")
    exists = "SELECT count(*) FROM pg_proc WHERE proname = 'flowforge_enqueue'"
    with psycopg.connect(url) as conn:
        assert conn.execute(exists).fetchone() == (1,)
    migrate.downgrade(settings, "0014")
    with psycopg.connect(url) as conn:
        assert conn.execute(exists).fetchone() == (0,)
