"""Shared fixtures: a real PostgreSQL (started here), the API over real HTTP.

API requests carry a write token by default: ``client`` (and ``gunicorn_api["headers"]``,
``auth_headers``) send ``Authorization: Bearer`` with the session's write token;
``read_client`` sends the read token, ``anon_client`` none. The session tokens are named
``tests-write`` and ``tests-read``; ``db`` deletes every other token before a test, and
no test may revoke those two. A server on a database of its own gets its token from
``issue_token(url)``.

Set ``FLOWFORGE_TEST_DATABASE_URL`` to a superuser URL of an existing server to use it
instead of starting one (the suite creates and drops its own databases there).
"""

from __future__ import annotations

import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
import pytest
import requests

from flowforge import migrate, tokens
from flowforge.config import Settings, load_settings
from flowforge.devdb import TempPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
FLOWFORGE = str(Path(sys.executable).parent / "flowforge")


def _with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


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


def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database; returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_db(admin_url, name)


def make_settings(database_url: str, **overrides: str) -> Settings:
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "info", **overrides}
    return load_settings(env)


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> str:
    """A database migrated to head, shared by the session (tables emptied per test)."""
    url = create_database(admin_url, "flowforge_test")
    migrate.upgrade(make_settings(url))
    return url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


SESSION_TOKENS = {"write": "tests-write", "read": "tests-read"}


def issue_token(
    database_url: str, name: str = SESSION_TOKENS["write"], scope: str = "write"
) -> str:
    """A valid token called ``name`` in that database (made anew if the name exists)."""
    token = tokens.new_token()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_tokens (name, token_hash, scope) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, "
            "scope = excluded.scope, revoked_at = NULL",
            (name, tokens.token_hash(token), scope),
        )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Tokens:
    """The session's tokens (``tests-write``, ``tests-read``) in the test database."""

    write: str
    read: str

    def headers(self, scope: str = "write") -> dict[str, str]:
        return bearer(self.write if scope == "write" else self.read)


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
    """An autocommit connection to the test database, its tasks, schedules and idempotency
    keys emptied first (a schedule left behind would make tasks in a later test), and
    every token but the session's deleted."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, schedules, idempotency_keys RESTART IDENTITY")
        conn.execute(
            "DELETE FROM api_tokens WHERE name <> ALL(%s)", (list(SESSION_TOKENS.values()),)
        )
        yield conn


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    """The app served in this process over real HTTP (threads, so requests can overlap)."""
    from flowforge.api import create_app

    app = create_app(settings)
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


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


class ApiClient(requests.Session):
    """requests, with the API's base URL prepended and, given one, a bearer token sent
    (a request may drop it with ``headers={"Authorization": None}``)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        super().__init__()
        self.base = base
        if token is not None:
            self.headers.update(bearer(token))

    def request(self, method: str, url: str, *args, **kwargs):  # type: ignore[override]
        return super().request(method, self.base + url, *args, **kwargs)


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "WORKER_"))}
    env.pop("JOURNAL_STREAM", None)
    # Worker metrics off unless a test asks: parallel test runs would share port 9464.
    env.update(
        {
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "json",
            "WORKER_METRICS_PORT": "0",
            **extra,
        }
    )
    return env


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):
            # a gunicorn booting under coverage may accept and answer late
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def gunicorn_api(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, api_tokens: Tokens
) -> Iterator[dict]:
    """``flowforge api`` (gunicorn, 2 workers) as a subprocess; its log in a file.
    ``headers`` carry the write token (``token``), ``read_token`` is the read one."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    env = service_env(database_url, API_HOST="127.0.0.1", API_PORT=str(port), API_WORKERS="2")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([FLOWFORGE, "api"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health")
        yield {
            "url": url,
            "proc": proc,
            "log": log_path,
            "token": api_tokens.write,
            "read_token": api_tokens.read,
            "headers": api_tokens.headers("write"),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
