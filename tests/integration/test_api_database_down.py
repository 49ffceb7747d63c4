"""The database goes away and comes back: the API answers 503 with the envelope meanwhile
(never a 500, never a hang), and serves again once PostgreSQL is back, without a restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from flowforge import migrate
from flowforge.api import create_app
from flowforge.devdb import TempPostgres

from ..support import assert_error, bearer, issue_token, make_settings, serve


class _Authorized:
    """``requests``' functions, each with a bearer token."""

    def __init__(self, token: str) -> None:
        self.headers = bearer(token)

    def __getattr__(self, method: str):
        def call(url: str, headers: dict | None = None, **kwargs):
            return requests.request(method, url, headers={**self.headers, **(headers or {})},
                                    **kwargs)  # fmt: skip

        return call


@pytest.fixture(scope="module")
def own_server() -> Iterator[TempPostgres]:
    """A PostgreSQL of its own: this test stops it."""
    server = TempPostgres().start()
    yield server
    server.destroy()


@pytest.mark.parametrize("keep_connection", [False, True], ids=["pooled", "kept"])
def test_database_down_is_503_and_back_is_200(
    own_server: TempPostgres, keep_connection: bool
) -> None:
    settings = make_settings(own_server.url(), DATABASE_CONNECT_TIMEOUT="1s")
    migrate.upgrade(settings)
    app = create_app(settings, keep_connection=keep_connection)
    requests = _Authorized(issue_token(own_server.url()))
    with serve(app) as url:
        before = requests.get(f"{url}/v1/tasks").json()["meta"]["total"]
        created = requests.post(f"{url}/v1/tasks", json={"title": "before the outage"})
        assert created.status_code == 201
        task_url = url + created.headers["Location"]
        assert requests.get(f"{url}/health").status_code == 200

        own_server.stop()
        started = time.monotonic()
        health = requests.get(f"{url}/health", headers={"X-Request-ID": "down-1"}, timeout=15)
        error = assert_error(health, 503, "service_unavailable")
        assert error["details"] == {"database": "unreachable"}
        assert health.headers["X-Request-ID"] == "down-1"
        for response in (
            requests.get(task_url, timeout=15),
            requests.get(f"{url}/v1/tasks", timeout=15),
            requests.post(f"{url}/v1/tasks", json={"title": "during"}, timeout=15),
            requests.put(task_url, json={"title": "during"}, timeout=15),
            requests.delete(task_url, timeout=15),
        ):
            assert_error(response, 503, "service_unavailable")
        # Bad input is still judged without the database.
        bad = requests.post(f"{url}/v1/tasks", json={"title": ""}, timeout=15)
        assert_error(bad, 400, "validation_failed")
        assert time.monotonic() - started < 30  # refused connections fail fast

        own_server.start_server()
        # Back: the first request already succeeds (stale connections are retried once).
        assert requests.get(f"{url}/health", timeout=15).status_code == 200
        fetched = requests.get(task_url, timeout=15)
        assert fetched.status_code == 200
        assert fetched.json()["data"]["title"] == "before the outage"
        assert requests.post(f"{url}/v1/tasks", json={"title": "after"}).status_code == 201
        assert requests.get(f"{url}/v1/tasks").json()["meta"]["total"] == before + 2
        assert requests.delete(task_url).status_code == 204


def _postgres_pids(server: TempPostgres) -> list[int]:
    """The postmaster and its children (backends, checkpointer, ...)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@pytest.mark.parametrize("keep_connection", [False, True], ids=["pooled", "kept"])
def test_health_answers_quickly_when_the_database_hangs(
    own_server: TempPostgres, keep_connection: bool
) -> None:
    """A frozen server (a stuck host, a partition) accepts TCP but never answers: /health
    must still answer 503 within the connect timeout, not hang with it."""
    settings = make_settings(own_server.url(), DATABASE_CONNECT_TIMEOUT="1s")
    migrate.upgrade(settings)
    app = create_app(settings, keep_connection=keep_connection)
    with serve(app) as url:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200  # connected
        # The postmaster first (it then starts no new process), then its children; one
        # that exits meanwhile (a backend whose client just left) has nothing to freeze.
        pids = _postgres_pids(own_server)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            health = requests.get(f"{url}/health", timeout=20)
            took = time.monotonic() - started
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        assert_error(health, 503, "service_unavailable")
        assert took < 10, took
        assert requests.get(f"{url}/health", timeout=20).status_code == 200


def test_the_health_query_reports_errors_and_leaves_the_connection_usable(db) -> None:
    from flowforge.db import query_within

    query_within(db, "SELECT 1", 2.0)
    assert db.execute("SELECT 41 + 1").fetchone() == (42,)  # psycopg carries on as usual
    with pytest.raises(psycopg.OperationalError, match="division by zero"):
        query_within(db, "SELECT 1/0", 2.0)
    assert db.execute("SELECT 'still fine'").fetchone() == ("still fine",)
