"""Queue settings enforced by the claim across real worker processes on a real PostgreSQL:
a concurrency limit never exceeded, a rate held over a window, a pause that stops claims
within a second while running tasks finish, and a resume that claims again."""

from __future__ import annotations

import time

import psycopg

from flowforge.db import make_engine
from flowforge.stores.queues import QueueStore
from flowforge.stores.tasks import TaskStore

from ..support import add_tasks, handler_runs, statuses, wait_until

ENV = {"WORKER_CONCURRENCY": "8", "WORKER_ISOLATION": "thread"}


def _put(settings, name: str, **changes: object) -> None:
    engine = make_engine(settings, pool_size=1)
    try:
        store = TaskStore(engine, default_max_attempts=3, lease_seconds=30, default_timeout=900)
        QueueStore(store.source).put(name, changes)
    finally:
        engine.dispose()


def _running(db: psycopg.Connection, queue: str) -> int:
    sql = "SELECT count(*) FROM tasks WHERE status = 'processing' AND queue = %s"
    return db.execute(sql, (queue,)).fetchone()[0]


def test_four_workers_never_run_more_than_the_concurrency_limit(
    db, spawn, settings, tmp_path
) -> None:
    runs = tmp_path / "runs"
    _put(settings, "few", concurrency=3)
    # 3 at a time for 0.1 s each: 700 keep the queue full for the 20 s sampled
    add_tasks(db, 700, "count", {"file": str(runs), "sleep": 0.1}, queue="few")
    add_tasks(db, 200, "count", {"file": str(runs), "sleep": 0.01}, queue="many")
    workers = [spawn(name=f"w{i}", **ENV) for i in range(4)]
    for w in workers:
        w.wait_for("worker ready")
    # Sampled every 50 ms for 20 s, as the check does.
    samples = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        samples.append(_running(db, "few"))
        time.sleep(0.05)
    assert max(samples) == 3  # reached, never passed
    assert sum(s == 3 for s in samples) > len(samples) / 2  # the limit is used, not starved
    unfinished = "SELECT count(*) FROM tasks WHERE queue = 'many' AND status <> 'completed'"
    assert db.execute(unfinished).fetchone()[0] == 0  # the unlimited queue ran beside it
    holders = db.execute("SELECT count(DISTINCT worker) FROM tasks WHERE queue = 'few' "
                         "AND worker IS NOT NULL").fetchone()[0]  # fmt: skip
    assert holders > 1  # the limit held across workers, not because one took them all


def test_a_rate_limit_holds_over_a_window_with_several_workers(
    db, spawn, settings, tmp_path
) -> None:
    runs = tmp_path / "runs"
    _put(settings, "api", rate={"limit": 10, "per": 1})
    add_tasks(db, 400, "count", {"file": str(runs)}, queue="api")  # more than 30 s' worth
    workers = [spawn(name=f"w{i}", **ENV) for i in range(4)]
    for w in workers:
        w.wait_for("worker ready")
    wait_until(lambda: len(handler_runs(runs, "start")) >= 10, 10, "the first starts")
    time.sleep(31)
    starts = sorted(float(f[3]) for f in handler_runs(runs, "start"))
    first = starts[0]
    # 30 s after the first burst, within 10 % of 10 a second (the check)
    window = [t for t in starts if first + 1 <= t < first + 31]
    assert 270 <= len(window) <= 330, len(window)
    # No 1-second window holds more than the limit (a little slack: start lines are
    # written by the handler, a few milliseconds after the claim counted them).
    assert max(sum(1 for u in starts if t <= u < t + 0.98) for t in starts) <= 10


def test_pause_stops_claims_within_a_second_and_resume_claims_again(
    db, spawn, settings, tmp_path
) -> None:
    runs = tmp_path / "runs"
    add_tasks(db, 60, "count", {"file": str(runs), "sleep": 0.5}, queue="p")
    workers = [spawn(name=f"w{i}", WORKER_CONCURRENCY="4", WORKER_ISOLATION="thread")
               for i in range(2)]  # fmt: skip
    for w in workers:
        w.wait_for("worker ready")
    add_tasks(db, 0, notify=True)
    wait_until(lambda: _running(db, "p") == 8, 10, "eight running")
    _put(settings, "p", paused=True)
    paused_at = time.time()
    running = {r[0] for r in db.execute("SELECT id FROM tasks WHERE status = 'processing'")}
    time.sleep(2)
    late = [f for f in handler_runs(runs, "start") if float(f[3]) > paused_at + 1]
    assert late == []  # nothing claimed a second after the pause
    finished = {int(f[0]) for f in handler_runs(runs)}
    assert running <= finished  # the running ones finished
    assert _running(db, "p") == 0
    pending = statuses(db)["pending"]
    assert pending > 0
    _put(settings, "p", paused=False)
    wait_until(lambda: statuses(db).get("pending", 0) < pending, 5, "claims after resume")


def test_the_breaker_trips_and_recovers_with_a_worker(db, spawn, settings, tmp_path) -> None:
    runs = tmp_path / "runs"
    _put(settings, "flaky", breaker={"failures": 3, "window": 60, "cooldown": 1})
    # Each task fails its first attempt and succeeds on its second.
    add_tasks(db, 5, "flaky", {"file": str(runs), "succeed_on": 2}, queue="flaky",
              max_attempts=5)  # fmt: skip
    w = spawn(WORKER_CONCURRENCY="1", WORKER_ISOLATION="thread", TASK_RETRY_BACKOFF="100ms")
    tripped = w.wait_for("queue paused by its circuit breaker", timeout=20)
    assert tripped["queue"] == "flaky"
    paused = db.execute("SELECT paused_by FROM queue_settings WHERE name = 'flaky'").fetchone()
    assert paused in (("breaker",), (None,))  # (None: a probe may have resumed it already)
    w.wait_for("queue resumed: its circuit breaker's probe succeeded", timeout=30)
    wait_until(lambda: statuses(db) == {"completed": 5}, 30, "every task completed")
    row = db.execute("SELECT paused, paused_by FROM queue_settings WHERE name = 'flaky'")
    assert row.fetchone() == (False, None)
    # No retry was claimed between the trip (the third failure) and the cooldown's end;
    # first attempts claimed before the trip ran (a trip stops claims, not claimed tasks).
    runs_by = sorted((float(f[3]), f[1]) for f in handler_runs(runs))
    third_failure = [t for t, attempt in runs_by if attempt == "1"][2]
    first_retry = min(t for t, attempt in runs_by if attempt == "2")
    assert first_retry - third_failure >= 0.9
