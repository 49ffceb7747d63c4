"""A failing list must not break the lists after it on the same connection (issue 22, 1).

psycopg prepares a statement on its sixth run on a connection. The list once sent its rows
and the planner's estimate in one pipeline: when the rows failed there, PostgreSQL skipped
the estimate's PREPARE while psycopg recorded it as prepared, and every later list of those
filters on that connection failed with ``prepared statement "_pg3_N" does not exist``. A
cursor whose id was JSON ``true`` reached the database (``bigint < boolean``), so one read
token could make GET /v1/tasks a 500 for every client of that API worker.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
import requests

from flowforge.config import Settings
from flowforge.db import DatabaseUnavailable, make_engine
from flowforge.stores.tasks import TaskStore

from ..support import Tokens, assert_error, bearer, make_settings, start_api, stop_api

LEGAL_LISTS = 100


def _cursor(raw: list) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(raw)).rstrip(b"=").decode()


# The cursor of the report: a well-formed key whose id is a boolean.
BOOLEAN_ID = _cursor([1, "2026-01-01T00:00:00+00:00", True, [None, None, None]])


@pytest.fixture
def one_worker_api(
    database_url: str, db: psycopg.Connection, api_tokens: Tokens, tmp_path: Path
) -> Iterator[requests.Session]:
    """``flowforge api`` with one gunicorn worker: one process, one kept connection, so
    every request below meets whatever an earlier one left on it."""
    proc, url = start_api(database_url, tmp_path / "api.log", API_WORKERS="1")
    session = requests.Session()
    session.headers.update(bearer(api_tokens.read))
    session.request = _prefixed(session.request, url)  # type: ignore[method-assign]
    try:
        yield session
    finally:
        session.close()
        stop_api(proc)


def _prefixed(request, base: str):
    return lambda method, path, *args, **kw: request(method, base + path, *args, **kw)


def test_a_bad_cursor_then_a_hundred_lists_on_one_worker(
    one_worker_api: requests.Session, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO tasks (title) SELECT 't' || g FROM generate_series(1, 30) g")
    api = one_worker_api
    # Interleaved, so one of the bad lists is the run on which psycopg prepares the legal
    # lists' statements, whatever the threshold (5 by default).
    bad = []
    for _ in range(10):
        assert api.get("/v1/tasks", params={"limit": 5}).status_code == 200
        bad.append(api.get("/v1/tasks", params={"cursor": BOOLEAN_ID}))
    answers = [api.get("/v1/tasks", params={"limit": 5}).status_code for _ in range(LEGAL_LISTS)]
    assert answers == [200] * LEGAL_LISTS
    for response in bad:
        error = assert_error(response, 400, "validation_failed")
        assert set(error["details"]) == {"cursor"}


@pytest.fixture
def kept_store(settings: Settings) -> Iterator[TaskStore]:
    """A store on one kept connection, as a gunicorn worker has it."""
    store = TaskStore(
        make_engine(settings), default_max_attempts=3, lease_seconds=30, keep_connection=True
    )
    try:
        yield store
    finally:
        store.engine.dispose()


def _poisoned_then_legal(store: TaskStore, poison) -> list[int]:
    """Each run of ``poison`` fails; afterwards every legal list must still work. Returns
    the page sizes of the legal lists that followed."""
    for _ in range(10):
        assert len(store.list(limit=5).tasks) == 5
        with pytest.raises((psycopg.Error, DatabaseUnavailable)):
            poison()
    return [len(store.list(limit=5).tasks) for _ in range(LEGAL_LISTS)]


def test_a_failing_rows_query_leaves_the_connection_usable(
    kept_store: TaskStore, db: psycopg.Connection
) -> None:
    """Whatever makes the rows query fail (here a key the API would refuse, passed to the
    store directly), the connection's prepared statements stay as psycopg believes."""
    db.execute("INSERT INTO tasks (title) SELECT 't' || g FROM generate_series(1, 30) g")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    sizes = _poisoned_then_legal(
        kept_store,
        lambda: kept_store.list(limit=5, after=(when, True)),  # type: ignore[arg-type]
    )
    assert sizes == [5] * LEGAL_LISTS


def test_a_statement_timeout_leaves_lists_working(
    database_url: str, db: psycopg.Connection
) -> None:
    """A list cut off by DATABASE_STATEMENT_TIMEOUT (the table locked by another session)
    fails alone: the lists after it, on that store, answer."""
    db.execute("INSERT INTO tasks (title) SELECT 't' || g FROM generate_series(1, 30) g")
    store = TaskStore(
        make_engine(make_settings(database_url, DATABASE_STATEMENT_TIMEOUT="200ms")),
        default_max_attempts=3,
        lease_seconds=30,
        keep_connection=True,
    )

    def locked_list() -> None:
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            with psycopg.connect(database_url) as conn:
                conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
                locked.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            locked.wait(10)
            store.list(limit=5, filters={"status": "pending"})
        finally:
            release.set()
            holder.join()

    try:
        for _ in range(10):
            assert len(store.list(limit=5, filters={"status": "pending"}).tasks) == 5
            with pytest.raises(DatabaseUnavailable):
                locked_list()
        sizes = [
            len(store.list(limit=5, filters={"status": "pending"}).tasks)
            for _ in range(LEGAL_LISTS)
        ]
        assert sizes == [5] * LEGAL_LISTS
    finally:
        store.engine.dispose()
