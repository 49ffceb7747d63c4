"""The fixtures: a real PostgreSQL (started here), the API over real HTTP, workers.

Helpers (paths, databases, tokens, servers, the task factory) are in ``support.py``: test
modules import them from there, never from here.

API requests carry a write token by default: ``client`` (and ``gunicorn_api["headers"]``,
``auth_headers``) send ``Authorization: Bearer`` with the session's write token;
``read_client`` sends the read token, ``anon_client`` none. The session tokens are named
``tests-write`` and ``tests-read``; ``db`` deletes every other token before a test, and
no test may revoke those two. A server on a database of its own gets its token from
``support.issue_token(url)``.

Set ``FLOWFORGE_TEST_DATABASE_URL`` to a superuser URL of an existing server to use it
instead of starting one (the suite creates and drops its own databases there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from flowforge import migrate
from flowforge.config import Settings
from flowforge.devdb import TempPostgres

from .support import (
    COUNTING_HANDLERS,
    SESSION_TOKENS,
    ApiClient,
    Tokens,
    WorkerProc,
    create_database,
    issue_token,
    make_settings,
    serve,
    start_api,
    stop_api,
    write_plugin,
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TempPostgres | None]:
    """The throwaway server, or None when FLOWFORGE_TEST_DATABASE_URL names one."""
    if os.environ.get("FLOWFORGE_TEST_DATABASE_URL"):
        yield None
        return
    server = TempPostgres().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def admin_url(pg_server: TempPostgres | None) -> str:
    return os.environ.get("FLOWFORGE_TEST_DATABASE_URL") or pg_server.url()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> str:
    """A database migrated to head, shared by the session (tables emptied per test)."""
    url = create_database(admin_url, "flowforge_test")
    migrate.upgrade(make_settings(url))
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def api_tokens(database_url: str) -> Tokens:
    return Tokens(
        write=issue_token(database_url, SESSION_TOKENS["write"], "write"),
        read=issue_token(database_url, SESSION_TOKENS["read"], "read"),
    )


@pytest.fixture(scope="session")
def auth_headers(api_tokens: Tokens) -> dict[str, str]:
    """``Authorization: Bearer`` with the session's write token."""
    return api_tokens.headers("write")


@pytest.fixture
def db(database_url: str, api_tokens: Tokens) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database, its tasks, schedules, idempotency
    keys and queue settings emptied first (a schedule left behind would make tasks in a
    later test, a paused queue would hold them), and every token but the session's
    deleted."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, schedules, idempotency_keys, queue_settings RESTART IDENTITY")
        conn.execute(
            "DELETE FROM api_tokens WHERE name <> ALL(%s)", (list(SESSION_TOKENS.values()),)
        )
        yield conn


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    """The app served in this process over real HTTP (threads, so requests can overlap)."""
    from flowforge.api import create_app

    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
def client(api_url: str, db: psycopg.Connection, api_tokens: Tokens) -> Iterator[ApiClient]:
    """The in-process API, with the session's write token."""
    with ApiClient(api_url, api_tokens.write) as session:
        yield session


@pytest.fixture
def read_client(api_url: str, db: psycopg.Connection, api_tokens: Tokens) -> Iterator[ApiClient]:
    """The in-process API, with the session's read token."""
    with ApiClient(api_url, api_tokens.read) as session:
        yield session


@pytest.fixture
def anon_client(api_url: str, db: psycopg.Connection) -> Iterator[ApiClient]:
    """The in-process API, without a token."""
    with ApiClient(api_url) as session:
        yield session


@pytest.fixture(scope="session")
def gunicorn_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, api_tokens: Tokens
) -> Iterator[dict]:
    """``flowforge api`` (gunicorn, 2 workers) as a subprocess; its log in a file.
    ``headers`` carry the write token (``token``), ``read_token`` is the read one."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    proc, url = start_api(database_url, log_path, API_WORKERS="2")
    try:
        yield {
            "url": url,
            "proc": proc,
            "log": log_path,
            "token": api_tokens.write,
            "read_token": api_tokens.read,
            "headers": api_tokens.headers("write"),
        }
    finally:
        stop_api(proc)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The counting handlers (``support.COUNTING_HANDLERS``: count, flaky, nul) installed
    as a plug-in; the directory to put on PYTHONPATH."""
    return write_plugin(
        tmp_path_factory.mktemp("plugin"),
        "ff_test_handlers",
        COUNTING_HANDLERS,
        ("count", "flaky", "nul"),
    )


@pytest.fixture
def spawn(
    database_url: str, plugin_path: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProc]]:
    """Starts ``flowforge worker`` processes with the counting handlers (on the test
    database unless given a URL); they are killed after the test."""
    procs: list[WorkerProc] = []

    def start(url: str | None = None, name: str = "worker", **env: str) -> WorkerProc:
        w = WorkerProc(url or database_url, tmp_path / f"{name}.log", plugin_path, **env)
        procs.append(w)
        return w

    yield start
    for w in procs:
        w.kill()
