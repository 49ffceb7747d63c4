"""GET /metrics on the API: request counts by route template summed over every gunicorn
worker (killed and reloaded ones included), queue gauges from the database, the address
allow-list. Real `flowforge api` processes, real PostgreSQL, real HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from flowforge.api import create_app

from ..support import make_settings, serve, start_api, stop_api

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(base: str) -> Samples:
    response = requests.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def requests_total(samples: Samples, method: str, route: str, status: int) -> float:
    key = (
        "flowforge_http_requests_total",
        (("method", method), ("route", route), ("status", str(status))),
    )
    return samples.get(key, 0.0)


def test_requests_are_counted_by_route_template_method_and_status(client, db) -> None:
    before = scrape(client.base)
    created = client.post("/v1/tasks", json={"title": "counted"})
    task_id = created.json()["data"]["id"]
    for _ in range(3):
        assert client.get(f"/v1/tasks/{task_id}").status_code == 200
    assert client.get("/v1/tasks/999999").status_code == 404
    assert client.get(f"/tasks/{task_id}").status_code == 200  # the unversioned alias
    assert client.get("/no/such/route/42").status_code == 404
    assert client.get("/no/such/route/43").status_code == 404
    assert client.request("BREW", "/v1/tasks").status_code == 405
    # refused by the token check before routing: still its route's template
    assert requests.get(f"{client.base}/v1/tasks/{task_id}", timeout=5).status_code == 401
    after = scrape(client.base)

    def delta(method: str, route: str, status: int) -> float:
        return requests_total(after, method, route, status) - requests_total(
            before, method, route, status
        )

    assert delta("POST", "/v1/tasks", 201) == 1
    assert delta("GET", "/v1/tasks/{id}", 200) == 3
    assert delta("GET", "/v1/tasks/{id}", 404) == 1
    assert delta("GET", "/tasks/{id}", 200) == 1
    assert delta("GET", "unmatched", 404) == 2  # one label for every unknown path
    assert delta("other", "unmatched", 405) == 1  # unknown methods are bounded too
    assert delta("GET", "/v1/tasks/{id}", 401) == 1
    routes = {dict(labels).get("route") for (name, labels) in after}
    routes.discard(None)  # samples without a route label
    # Bounded: route templates and "unmatched", never a raw path or id. (The registry is
    # the session's: other tests' apps add their own templates, such as /moved.)
    assert {"/v1/tasks", "/v1/tasks/{id}", "/tasks/{id}", "unmatched"} <= routes, routes
    assert not [r for r in routes if r != "unmatched" and re.search(r"/[0-9]+(/|$)", r)], routes
    assert not [r for r in routes if "/no/such/route" in r], routes
    count = ("flowforge_http_request_duration_seconds_count",
             (("method", "GET"), ("route", "/v1/tasks/{id}")))  # fmt: skip
    assert after[count] - before.get(count, 0) == 5  # 200 x 3, 404, 401
    inf = ("flowforge_http_request_duration_seconds_bucket",
           (("le", "+Inf"), ("method", "GET"), ("route", "/v1/tasks/{id}")))  # fmt: skip
    assert after[inf] == after[count]


def test_queue_gauges_come_from_the_database(served, db) -> None:
    db.execute(
        "INSERT INTO tasks (title, queue, status, run_at) VALUES "
        "('a', 'default', 'pending', now() - interval '90 seconds'), "
        "('b', 'default', 'pending', now() - interval '10 seconds'), "
        "('c', 'default', 'pending', now() + interval '1 hour'), "  # not due: not waiting
        "('d', 'mail', 'failed', now()), ('e', 'mail', 'completed', now()), "
        "('f', 'mail', 'completed', now())"
    )
    samples = scrape(served())  # a new app: nothing cached
    tasks = {
        (dict(labels)["queue"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "flowforge_tasks"
    }
    statuses = ("pending", "processing", "completed", "failed", "cancelled")
    present = {("default", "pending"): 3, ("mail", "failed"): 1, ("mail", "completed"): 2}
    # every status of every queue, 0 where there are none (a series, not an absence)
    assert tasks == {(q, s): present.get((q, s), 0) for q in ("default", "mail") for s in statuses}
    assert all(v == 0 for (name, _), v in samples.items() if name == "flowforge_tasks_estimated")
    oldest = samples[("flowforge_queue_oldest_pending_age_seconds", (("queue", "default"),))]
    assert 90 <= oldest < 120
    assert samples[("flowforge_queue_oldest_pending_age_seconds", (("queue", "mail"),))] == 0
    assert samples[("flowforge_database_up", ())] == 1
    assert samples[("flowforge_db_oldest_transaction_age_seconds", ())] >= 0


def test_queue_settings_gauges(served, db) -> None:
    db.execute("INSERT INTO tasks (title, queue, status) VALUES ('a', 'mail', 'processing')")
    db.execute(
        "INSERT INTO queue_settings (name, paused, paused_by, concurrency, rate_limit, rate_per)"
        " VALUES ('mail', false, NULL, 5, 30, 60), ('held', true, 'operator', NULL, NULL, NULL)"
    )
    samples = scrape(served())

    def gauge(name: str, queue: str) -> float | None:
        return samples.get((f"flowforge_queue_{name}", (("queue", queue),)))

    assert (gauge("paused", "held"), gauge("paused", "mail"), gauge("paused", "default")) == (
        1, 0, 0
    )  # fmt: skip
    assert gauge("concurrency_limit", "mail") == 5 and gauge("concurrency_limit", "held") is None
    assert gauge("rate_limit_per_second", "mail") == 0.5
    assert gauge("rate_limit_per_second", "held") is None
    assert gauge("running", "mail") == 1 and gauge("running", "held") == 0
    assert gauge("breaker_tripped", "held") == 0
    db.execute("UPDATE queue_settings SET paused_by = 'breaker' WHERE name = 'held'")
    samples = scrape(served())
    assert gauge("breaker_tripped", "held") == 1 and gauge("breaker_tripped", "mail") == 0


def test_a_status_over_the_cap_is_estimated_and_split_by_queue(settings, db) -> None:
    from flowforge.db import make_engine
    from flowforge.stores.tasks import TaskStore

    db.execute(
        "INSERT INTO tasks (title, queue, status, completed_at) "
        "SELECT 't', CASE WHEN g % 4 = 0 THEN 'mail' ELSE 'default' END, 'completed', now() "
        "FROM generate_series(1, 400) g"
    )
    db.execute("INSERT INTO tasks (title, queue) VALUES ('p1', 'mail'), ('p2', 'mail')")
    db.execute("ANALYZE tasks")  # what autovacuum does after enough changes
    store = TaskStore(make_engine(settings), default_max_attempts=3, lease_seconds=30)
    stats = store.queue_metrics(2000, cap=50, sample=200)
    counts = {(q, s): n for q, s, n in stats.counts}
    assert stats.estimated == ["completed"]
    assert counts[("mail", "pending")] == 2  # under the cap: exact
    assert 250 <= counts[("default", "completed")] <= 350  # 300 really
    assert 50 <= counts[("mail", "completed")] <= 150  # 100 really
    assert sum(n for (_, s), n in counts.items() if s == "completed") == 400
    assert [q for q, _ in stats.oldest_pending] == ["mail"]
    # exact again when the cap allows
    exact = store.queue_metrics(2000, cap=10_000)
    assert exact.estimated == []
    assert {(q, s): n for q, s, n in exact.counts} == {
        ("default", "completed"): 300,
        ("mail", "completed"): 100,
        ("mail", "pending"): 2,
    }


def test_an_open_transaction_shows_its_age(served, db, database_url) -> None:
    with psycopg.connect(database_url) as idle:  # autocommit off: BEGIN on first statement
        idle.execute("SELECT 1")
        time.sleep(1.5)
        age = scrape(served())[("flowforge_db_oldest_transaction_age_seconds", ())]
        idle.rollback()
    assert age >= 1.5
    assert scrape(served())[("flowforge_db_oldest_transaction_age_seconds", ())] < 1.5


@pytest.fixture
def served(settings) -> Iterator[Callable[..., str]]:
    with contextlib.ExitStack() as servers:

        def serve_app(**env: str) -> str:
            return servers.enter_context(
                serve(create_app(make_settings(settings.database_url, **env)))
            )

        yield serve_app


def test_only_allowed_addresses_read_metrics(served, db) -> None:
    base = served(METRICS_ALLOW="10.0.0.0/8, 192.168.1.7")
    response = requests.get(f"{base}/metrics", timeout=5)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "flowforge_" not in response.text
    assert response.headers["X-Request-ID"]
    # the rest of the API is not affected
    assert requests.get(f"{base}/health", timeout=5).status_code == 200
    assert requests.get(f"{served(METRICS_ALLOW='127.0.0.1')}/metrics", timeout=5).ok


def _worker_pids(metrics_dir: Path) -> set[int]:
    return {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("counter_*.db")}


def test_gunicorn_workers_are_summed_dead_and_reloaded_ones_included(
    database_url, db, tmp_path, auth_headers
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale: a previous run's file")
    proc, base = start_api(
        database_url, tmp_path / "api.log", API_WORKERS="3", API_METRICS_DIR=str(metrics_dir)
    )
    try:
        assert 999999 not in _worker_pids(metrics_dir)  # wiped at start
        task_id = requests.post(
            f"{base}/v1/tasks", json={"title": "m"}, headers=auth_headers, timeout=30
        ).json()
        task_id = task_id["data"]["id"]
        url = f"{base}/v1/tasks/{task_id}"
        closing = {**auth_headers, "Connection": "close"}
        # Each request on a new connection: gunicorn's sync workers take turns.
        sent = 0
        while len(_worker_pids(metrics_dir)) < 3 or sent < 60:
            assert requests.get(url, timeout=30, headers=closing).ok
            sent += 1
            assert sent < 2000, "the requests never reached all three workers"
        assert requests_total(scrape(base), "GET", "/v1/tasks/{id}", 200) == sent

        # A worker killed outright: gunicorn starts another, its counts stay in the sum.
        victim = min(_worker_pids(metrics_dir))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(_worker_pids(metrics_dir) - {victim}) < 3 or sent < 120:
            assert requests.get(url, timeout=30, headers=closing).ok
            sent += 1
            assert time.monotonic() < deadline, "no replacement worker served requests"
        assert requests_total(scrape(base), "GET", "/v1/tasks/{id}", 200) == sent

        # A reload (HUP) replaces every worker; the sums go on.
        before = _worker_pids(metrics_dir)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (_worker_pids(metrics_dir) - before):
            assert requests.get(url, timeout=30, headers=closing).ok
            sent += 1
            assert time.monotonic() < deadline, "no new worker after HUP"
        assert requests_total(scrape(base), "GET", "/v1/tasks/{id}", 200) == sent
    finally:
        stop_api(proc)

    # A fresh start begins at zero.
    proc, base = start_api(
        database_url, tmp_path / "api2.log", API_WORKERS="2", API_METRICS_DIR=str(metrics_dir)
    )
    try:
        assert requests_total(scrape(base), "GET", "/v1/tasks/{id}", 200) == 0
    finally:
        stop_api(proc)


def test_without_api_metrics_dir_a_private_directory_is_made_and_removed(
    database_url, db, tmp_path
) -> None:
    temp = tmp_path / "tmp"  # the API's TMPDIR: other processes' directories stay out of it
    temp.mkdir()
    proc, base = start_api(database_url, tmp_path / "api.log", API_WORKERS="2", TMPDIR=str(temp))
    try:
        for _ in range(10):
            assert requests.get(f"{base}/health", timeout=5, headers={"Connection": "close"}).ok
        assert requests_total(scrape(base), "GET", "/health", 200) >= 10
        made = list(temp.glob("flowforge-api-metrics-*"))
        assert len(made) == 1 and list(made[0].glob("counter_*.db"))
    finally:
        stop_api(proc)
    assert not made[0].exists()
