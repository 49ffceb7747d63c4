"""Retention (TASK_RETENTION): finished tasks older than it are deleted by the workers, a
bounded amount per pass, by one pruner at a time; the young, the unfinished and, with
``0``, every task stay. The duty runs in this process against the real database (the
batches and the lock are then exact), and once in a real `flowforge worker`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flowforge.devdb import free_port
from flowforge.domain.states import Status
from flowforge.stores import common_sql, ops_sql
from flowforge.stores.ops_sql import PRUNABLE
from flowforge.worker.dispatcher import Worker
from flowforge.worker.duties import retention
from flowforge.worker.duties.retention import Retention
from flowforge.worker.metrics import WorkerMetrics
from flowforge.worker.queue import TaskQueue

from ..support import WorkerProc, add_tasks, make_settings, script, service_env, wait_until

OLD = timedelta(days=2)  # past the 1d retention these tests use
YOUNG = timedelta(hours=1)


def aged(conn: psycopg.Connection, n: int, status: str, ago: timedelta) -> list[int]:
    """``n`` tasks in ``status`` that finished (or, unfinished, last changed) ``ago``."""
    at = datetime.now(UTC) - ago
    finished = status in PRUNABLE
    return add_tasks(
        conn, n, title=f"{status} %s", status=status, attempts=1, created_at=at,
        updated_at=at, completed_at=at if finished else None,
        lease_expires_at=datetime.now(UTC) + YOUNG if status == Status.PROCESSING else None,
    )  # fmt: skip


def left(conn: psycopg.Connection) -> set[int]:
    return {task_id for (task_id,) in conn.execute("SELECT id FROM tasks").fetchall()}


@pytest.fixture
def queue(database_url: str) -> Iterator[TaskQueue]:
    q = TaskQueue(make_settings(database_url), "pruner-1")
    yield q
    q.close()


@pytest.fixture
def duty(database_url: str) -> Retention:
    settings = make_settings(database_url, TASK_RETENTION="1d")
    return Retention(settings, WorkerMetrics(settings, ("127.0.0.1", 0)))


def pruned_total(duty: Retention, status: str) -> float:
    value = duty.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "flowforge_tasks_pruned_total", {"status": status}
    )
    assert value is not None
    return value


def test_old_finished_tasks_of_every_final_status_go(db, queue, duty, caplog) -> None:
    doomed = {s: aged(db, 2, s, OLD) for s in PRUNABLE}
    young = {i for s in PRUNABLE for i in aged(db, 1, s, YOUNG)}
    unfinished = {i for s in (Status.PENDING, Status.PROCESSING) for i in aged(db, 2, s, OLD)}
    assert set(PRUNABLE) == {"completed", "failed", "cancelled"}
    with caplog.at_level(logging.INFO, logger="flowforge.worker"):
        duty.run(queue, 0.0)
    assert left(db) == young | unfinished
    assert {s: pruned_total(duty, s) for s in doomed} == {s: 2.0 for s in doomed}
    (line,) = [r for r in caplog.records if r.getMessage().startswith("retention: pruned")]
    assert line.getMessage() == "retention: pruned 6 finished tasks older than 1d"
    assert line.pruned_by_status == {s: 2 for s in PRUNABLE}  # type: ignore[attr-defined]
    assert duty.interval == retention.INTERVAL  # caught up

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="flowforge.worker"):
        duty.run(queue, 1.0)  # nothing left to prune: no line, the metric stays
    assert not [r for r in caplog.records if "retention" in r.getMessage()]
    assert pruned_total(duty, "failed") == 2.0
    assert left(db) == young | unfinished


def test_a_pass_is_bounded_and_a_backlog_comes_back_soon(db, queue, duty) -> None:
    per_pass = retention.BATCHES * ops_sql.PRUNE_BATCH
    aged(db, per_pass + 10, "completed", OLD)
    duty.run(queue, 0.0)
    assert len(left(db)) == 10
    assert duty.interval == retention.BACKLOG_INTERVAL
    duty.run(queue, 1.0)
    assert left(db) == set()
    assert duty.interval == retention.INTERVAL
    assert pruned_total(duty, "completed") == per_pass + 10


def test_the_oldest_go_first(db, queue) -> None:
    oldest = aged(db, 3, "failed", timedelta(days=9))
    newer = aged(db, 3, "failed", OLD)
    cutoff = queue.age_cutoff(timedelta(days=1).total_seconds())
    assert queue.prune_finished(cutoff, 3) == (True, {"failed": 3})
    assert left(db) == set(newer) and not set(oldest) & left(db)


def test_one_pruner_at_a_time(db, database_url: str, queue, duty) -> None:
    """While another pruner's statement runs (held open here, in a transaction), a pass
    deletes nothing and fails nothing; once it has committed, the rest go."""
    aged(db, 5, "completed", OLD)
    with psycopg.connect(database_url) as other:  # not autocommit: the statement's lock stays
        cutoff = datetime.now(UTC) - timedelta(days=1)
        rows = other.execute(
            ops_sql.PRUNE_FINISHED,
            {"cutoff": cutoff, "statuses": list(PRUNABLE), "limit": 2},
        ).fetchall()
        assert ops_sql.pruned(rows) == (True, {"completed": 2})
        duty.run(queue, 0.0)
        assert pruned_total(duty, "completed") == 0
        assert len(left(db)) == 5  # the other's delete is not committed yet
        other.commit()
    assert len(left(db)) == 3
    duty.run(queue, 1.0)
    assert left(db) == set()
    assert pruned_total(duty, "completed") == 3


def test_the_lock_is_the_shared_key(db, queue) -> None:
    """cleanup.py and the workers take one key: held anywhere, a prune waits its turn."""
    aged(db, 1, "cancelled", OLD)
    cutoff = queue.age_cutoff(86400)
    db.execute("SELECT pg_advisory_lock(%s)", (common_sql.PRUNE_LOCK_KEY,))
    try:
        assert queue.prune_finished(cutoff, 10) == (False, {})
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (common_sql.PRUNE_LOCK_KEY,))
    assert queue.prune_finished(cutoff, 10) == (True, {"cancelled": 1})


def test_cleanup_waits_for_the_pruner_it_meets(db, database_url: str) -> None:
    """cleanup.py deletes finished tasks by the workers' statement: while the lock is taken
    it tries again (it does not report 0 deleted), and then deletes them."""
    aged(db, 3, "failed", OLD)
    db.execute("SELECT pg_advisory_lock(%s)", (common_sql.PRUNE_LOCK_KEY,))
    done: list = []
    run = threading.Thread(
        target=lambda: done.append(
            script("cleanup.py", "--older-than", "1d", env=service_env(database_url))
        )
    )
    run.start()
    try:
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND query LIKE %s",
                    ("%pg_try_advisory_xact_lock%",),
                ).fetchone()[0]  # type: ignore[index]
                > 0
            ),
            30,
            "cleanup.py trying the lock",
        )
        assert len(left(db)) == 3
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (common_sql.PRUNE_LOCK_KEY,))
        run.join(60)
    (proc,) = done
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deleted 3 tasks (failed 3) older than 1d")
    assert left(db) == set()


@pytest.mark.parametrize(("value", "prunes"), [("0", False), ("30d", True)])
def test_zero_keeps_every_task(database_url: str, value: str, prunes: bool) -> None:
    settings = make_settings(
        database_url, TASK_RETENTION=value, WORKER_ISOLATION="thread", WORKER_METRICS_PORT="0"
    )
    worker = Worker(settings, handlers={})
    try:
        assert any(isinstance(d, Retention) for d in worker.duties) is prunes
    finally:
        worker.queue.close()


def test_a_worker_prunes_and_counts(db, database_url: str, tmp_path: Path) -> None:
    old = [i for s in PRUNABLE for i in aged(db, 1, s, OLD)]
    kept = set(aged(db, 1, "completed", YOUNG)) | set(aged(db, 1, "pending", OLD))
    port = free_port()
    w = WorkerProc(
        database_url, tmp_path / "w.log", "", TASK_RETENTION="1d", WORKER_METRICS_PORT=str(port),
        WORKER_QUEUES="none-here",  # claims nothing: the pending task stays pending
    )  # fmt: skip
    try:
        line = w.wait_for("retention: pruned")
        assert line["pruned"] == len(old) and line["pruned_by_status"] == {s: 1 for s in PRUNABLE}
        assert left(db) == kept
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        samples = {
            s.labels["status"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "flowforge_tasks_pruned_total"
        }
        assert samples == {s: 1.0 for s in PRUNABLE}
        assert w.stop() == 0
    finally:
        w.kill()
