"""A worker process's own /metrics (WORKER_METRICS_PORT): after known outcomes the counters
and histograms say exactly what happened; the address allow-list; a port in use does not
stop the worker. Real `flowforge worker` processes, real PostgreSQL, real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flowforge.devdb import free_port
from flowforge.stores import common_sql

from ..support import COUNTING_HANDLERS, WorkerProc, add_tasks, statuses, wait_until, write_plugin


@pytest.fixture(scope="module")
def handlers(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The counting handlers (count and flaky), installed on PYTHONPATH."""
    return write_plugin(
        tmp_path_factory.mktemp("plugin"), "ff_test_handlers", COUNTING_HANDLERS, ("count", "flaky")
    )


@pytest.fixture
def worker(database_url: str, handlers: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    procs: list[WorkerProc] = []

    def start(**env: str) -> WorkerProc:
        w = WorkerProc(database_url, tmp_path / f"w{len(procs)}.log", handlers, **env)
        procs.append(w)
        return w

    yield start
    for w in procs:
        w.kill()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a worker's /metrics: (name, sorted labels) -> value."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_counters_and_histograms_match_known_outcomes(db, worker, tmp_path) -> None:
    base = free_port()
    runs = tmp_path / "runs"
    # Instance 3 of the template unit: base + 2.
    w = worker(
        WORKER_METRICS_PORT=str(base - 2),
        WORKER_INSTANCE="3",
        WORKER_CONCURRENCY="3",
        TASK_RETRY_BACKOFF="50ms",
        TASK_RETRY_BACKOFF_MAX="50ms",
    )
    ready = w.wait_for("worker metrics on")
    assert ready["metrics_port"] == base
    w.wait_for("worker ready")
    add_tasks(db, 20, "count", {"file": str(runs)}, notify=True)
    # Succeeds on attempt 2: one retried, one completed run each.
    add_tasks(db, 3, "flaky", {"file": str(runs), "succeed_on": 2}, notify=True)
    # Never succeeds, 2 attempts: one retried, one failed run each.
    add_tasks(db, 4, "flaky", {"file": str(runs)}, max_attempts=2, notify=True)
    # Two in a queue of their own (the default worker claims from every queue).
    db.execute(
        "INSERT INTO tasks (title, type, payload, queue) SELECT 'mail', 'count', %s, 'mail' "
        "FROM generate_series(1, 2)",
        (json.dumps({"file": str(runs)}),),
    )
    db.execute(common_sql.NOTIFY)
    wait_until(lambda: statuses(db) == {"completed": 25, "failed": 4}, 30, "all outcomes")
    # The outcome is counted once the database has it: give the dispatcher its turn.
    want = {
        ("default", "count", "completed"): 20,
        ("default", "flaky", "completed"): 3,
        ("default", "flaky", "retried"): 3 + 4,
        ("default", "flaky", "failed"): 4,
        ("mail", "count", "completed"): 2,
    }
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(base)
        got = {
            tuple(dict(labels)[k] for k in ("queue", "type", "outcome")): value
            for (name, labels), value in samples.items()
            if name == "flowforge_tasks_processed_total"
        }
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == want
    runs_total = 20 + 3 * 2 + 4 * 2
    durations = sum(
        v for (name, _), v in samples.items() if name == "flowforge_task_duration_seconds_count"
    )
    assert durations == runs_total + 2
    pickups = samples[("flowforge_task_pickup_delay_seconds_count", (("queue", "default"),))]
    assert pickups == runs_total
    assert samples[("flowforge_task_pickup_delay_seconds_count", (("queue", "mail"),))] == 2
    # Retries wait their backoff (50 ms) from run_at, so every pickup is well under a minute.
    bucket = ("flowforge_task_pickup_delay_seconds_bucket", (("le", "60.0"), ("queue", "default")))
    assert samples[bucket] == runs_total
    assert samples[("flowforge_worker_busy", ())] == 0
    assert samples[("flowforge_worker_capacity", ())] == 3
    assert w.stop() == 0


def test_busy_counts_running_tasks_and_a_lost_lease_is_lease_lost(db, worker, tmp_path) -> None:
    port = free_port()
    w = worker(WORKER_METRICS_PORT=str(port), WORKER_CONCURRENCY="2")
    w.wait_for("worker ready")
    add_tasks(db, 1, "count", {"file": str(tmp_path / "runs"), "sleep": 1.5}, notify=True)
    wait_until(lambda: statuses(db) == {"processing": 1}, 10, "the task to start")
    wait_until(lambda: scrape(port)[("flowforge_worker_busy", ())] == 1, 5, "busy = 1")
    # Someone else takes the task from under the worker (as the reaper would): its
    # outcome no longer matches the fencing token and is discarded.
    db.execute("UPDATE tasks SET status = 'failed', lease_token = NULL")
    w.wait_for("outcome discarded")
    samples = scrape(port)
    key = (
        "flowforge_tasks_processed_total",
        (("outcome", "lease_lost"), ("queue", "default"), ("type", "count")),
    )
    assert samples[key] == 1
    assert samples[("flowforge_worker_busy", ())] == 0
    assert w.stop() == 0


def test_only_allowed_addresses_read_metrics(db, worker) -> None:
    port = free_port()
    w = worker(WORKER_METRICS_PORT=str(port), METRICS_ALLOW="10.0.0.0/8")
    w.wait_for("worker ready")
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 403
    assert "METRICS_ALLOW" in response.text
    assert "flowforge_" not in response.text
    assert w.stop() == 0


def test_a_port_in_use_is_logged_and_the_worker_runs_on(db, worker, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        w = worker(WORKER_METRICS_PORT=str(port), WORKER_METRICS_HOST="127.0.0.1")
        line = w.wait_for("worker metrics disabled")
        assert line["level"] == "ERROR" and line["metrics_port"] == port
        w.wait_for("worker ready")
        add_tasks(db, 3, "count", {"file": str(tmp_path / "runs")}, notify=True)
        wait_until(lambda: statuses(db) == {"completed": 3}, 10, "3 completed tasks")
    assert w.stop() == 0
