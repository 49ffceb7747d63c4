"""Connections, in one place: how FlowForge connects to PostgreSQL, and what it makes of
the driver's errors.

- ``connect_options``: the one set of libpq options every connection gets (UTC, the
  statement timeout, TCP keepalives), the API's pool and the worker's connections alike.
- ``make_engine``: a SQLAlchemy engine (the pool, and Alembic's dialect) whose pooled
  connections are autocommit; ``connect``: one plain autocommit connection (the worker's
  dispatcher and listener). Both set the orjson loader for jsonb (``_prepare``).
- ``unavailable`` / ``refused``: a psycopg error as ``DatabaseUnavailable`` (the server is
  out of reach: 503, retry) or ``DatabaseRefused`` (it answered with an error).
- ``query_within``: a statement with a client-side deadline (the /health ping).

The API's hot path borrows a raw psycopg connection from the engine's pool and runs the
SQL of ``flowforge.stores`` itself: autocommit, so a single statement is one round trip
(psycopg's default would wrap it in BEGIN ... COMMIT), and no ORM work per request.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
from psycopg import pq
from psycopg.types.json import set_json_dumps, set_json_loads
from sqlalchemy import Engine, create_engine, event

from .config import Settings

# The ping: the one statement of the connections' own (/health, the healthcheck, a worker's
# first connection). Here, not in a store: the stores build on this module.
HEALTH = "SELECT 1"


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke mid-statement."""


class DatabaseRefused(DatabaseUnavailable):
    """The server answered with an error (not migrated, permissions): retried like an outage."""


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's messages go on with DETAIL and HINT lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    """The driver's error (or SQLAlchemy's wrapping of it) as ``DatabaseUnavailable``."""
    return DatabaseUnavailable(first_line(exc))


def refused(exc: BaseException) -> DatabaseUnavailable:
    """A statement's error: a broken connection is ``DatabaseUnavailable``, any other error
    the server answered with is ``DatabaseRefused``."""
    if isinstance(exc, psycopg.OperationalError):
        return unavailable(exc)
    return DatabaseRefused(first_line(exc))


def sqlalchemy_url(database_url: str) -> str:
    """The libpq URL operators write, as SQLAlchemy names the psycopg 3 driver."""
    parts = urlsplit(database_url)
    return parts._replace(scheme="postgresql+psycopg").geturl()


def connect_options(settings: Settings, application_name: str) -> dict[str, Any]:
    """libpq options of every FlowForge connection: UTC, DATABASE_STATEMENT_TIMEOUT, the
    connect timeout, and TCP keepalives, so a server that vanished without closing the
    connection (host down, network cut) is noticed within seconds, not after the kernel's
    TCP timeouts."""
    statement_ms = int(settings.database_statement_timeout * 1000)
    return {
        "connect_timeout": max(1, round(settings.database_connect_timeout)),
        "application_name": application_name,
        "options": f"-c timezone=UTC -c statement_timeout={statement_ms}",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 15000,
    }


def _prepare(conn: psycopg.Connection) -> None:
    """Every new connection: jsonb comes back through orjson (also faster). PostgreSQL
    writes 1.5e300 as 301 digits, which the json module reads as an int that no encoder
    takes; orjson reads it as the float it was, so every stored payload can be served
    again. It goes in through orjson too (``Jsonb`` payloads: a tenth of the json
    module's time); they are parsed request bodies, so nothing the two would write
    differently (NaN, a 65-bit integer) can be in one."""
    set_json_loads(orjson.loads, conn)
    set_json_dumps(orjson.dumps, conn)


def _on_engine_connect(dbapi_connection: Any, _record: Any) -> None:
    _prepare(dbapi_connection)


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """An engine whose pooled connections are autocommit, UTC and time-limited."""
    engine = create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_connect_timeout,
        isolation_level="AUTOCOMMIT",
        connect_args=connect_options(settings, "flowforge"),
    )
    event.listen(engine, "connect", _on_engine_connect)
    return engine


def connect(settings: Settings, application_name: str = "flowforge-worker") -> psycopg.Connection:
    """One autocommit connection with ``connect_options``; ``DatabaseUnavailable`` if the
    server cannot be reached."""
    try:
        conn = psycopg.connect(
            settings.database_url, autocommit=True, **connect_options(settings, application_name)
        )
    except psycopg.Error as exc:
        raise unavailable(exc) from exc
    _prepare(conn)
    return conn


def _borrow(engine: Engine) -> Any:
    try:
        return engine.raw_connection()
    except Exception as exc:  # SQLAlchemy wraps the psycopg error
        raise unavailable(exc) from exc


@contextmanager
def connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """Borrow a psycopg connection from the pool; broken ones are thrown away.

    Any psycopg ``OperationalError`` (server gone, connection reset, timeout) becomes
    ``DatabaseUnavailable`` so callers answer 503 rather than 500.
    """
    proxied = _borrow(engine)
    try:
        yield proxied.driver_connection  # type: ignore[misc]
    except psycopg.OperationalError as exc:
        proxied.invalidate(exc)
        raise unavailable(exc) from exc
    finally:
        if proxied.is_valid:
            proxied.close()  # back to the pool


class ConnectionSource:
    """Connections for one component, pooled or kept.

    ``keep=True`` is for a process that serves one request at a time (a gunicorn sync
    worker): it checks one connection out of the pool and keeps it, saving the pool's
    checkout and check-in (about 30 us a request here). A broken kept connection is
    thrown away and the next call takes a fresh one. With ``keep=False`` every call
    borrows from the pool, which is what threaded callers need.
    """

    def __init__(self, engine: Engine, *, keep: bool = False) -> None:
        self.engine = engine
        self.keep = keep
        self._kept: Any = None
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if not self.keep:
            with connection(self.engine) as conn:
                yield conn
            return
        with self._lock:
            if self._kept is None or not self._kept.is_valid:
                self._kept = _borrow(self.engine)
            kept = self._kept
            try:
                yield kept.driver_connection
            except psycopg.OperationalError as exc:
                kept.invalidate(exc)
                self._kept = None
                raise unavailable(exc) from exc


def query_within(conn: psycopg.Connection, sql: str, timeout: float) -> None:
    """Run ``sql`` (no parameters, result ignored) or raise ``psycopg.OperationalError``
    after ``timeout`` seconds. psycopg has no client-side timeout, so this drives libpq
    directly; the caller's connection source throws the connection away on that error.
    A hung server accepts TCP and never answers: /health must not hang too."""
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout

    def wait(read: bool) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        fds = [pgconn.socket]
        readable, writable, _ = select.select(fds if read else [], [] if read else fds, [],
                                              remaining)  # fmt: skip
        if not (readable or writable):
            raise psycopg.OperationalError(f"no answer from the database within {timeout:g}s")

    pgconn.send_query(sql.encode())
    while pgconn.flush():
        wait(read=False)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        wait(read=True)
    error = None
    while (result := pgconn.get_result()) is not None:  # drain them all: the conn is idle again
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            error = (result.error_message or b"").decode(errors="replace").strip()
    if error is not None:
        raise psycopg.OperationalError(error or "the health query failed")


def ping(source: ConnectionSource, timeout: float) -> None:
    """Raise ``DatabaseUnavailable`` unless PostgreSQL answers ``HEALTH`` within
    ``timeout`` seconds; a connection gone stale (every pooled one, after a PostgreSQL
    restart) is replaced and asked once more."""
    for attempt in (1, 2):
        try:
            with source.connection() as conn:
                query_within(conn, HEALTH, timeout)
            return
        except DatabaseUnavailable:
            if attempt == 2:
                raise
