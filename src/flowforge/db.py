"""Connections: a SQLAlchemy engine (pool and Alembic's dialect) on psycopg 3.

The API's hot path borrows a raw psycopg connection from the engine's pool and runs the
SQL of ``queries.py`` itself: autocommit, so a single statement is one round trip
(psycopg's default would wrap it in BEGIN ... COMMIT), and no ORM work per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import Engine, create_engine

from .config import Settings


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke mid-statement."""


def sqlalchemy_url(database_url: str) -> str:
    """The libpq URL operators write, as SQLAlchemy names the psycopg 3 driver."""
    parts = urlsplit(database_url)
    return parts._replace(scheme="postgresql+psycopg").geturl()


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """An engine whose pooled connections are autocommit, UTC and time-limited."""
    statement_ms = int(settings.database_statement_timeout * 1000)
    return create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_connect_timeout,
        isolation_level="AUTOCOMMIT",
        connect_args={
            "connect_timeout": max(1, round(settings.database_connect_timeout)),
            "application_name": "flowforge",
            "options": f"-c timezone=UTC -c statement_timeout={statement_ms}",
        },
    )


@contextmanager
def connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """Borrow a psycopg connection from the pool; broken ones are thrown away.

    Any psycopg ``OperationalError`` (server gone, connection reset, timeout) becomes
    ``DatabaseUnavailable`` so callers answer 503 rather than 500.
    """
    try:
        proxied = engine.raw_connection()
    except Exception as exc:  # SQLAlchemy wraps the psycopg error
        raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc
    try:
        yield proxied.driver_connection  # type: ignore[misc]
    except psycopg.OperationalError as exc:
        proxied.invalidate(exc)
        raise DatabaseUnavailable(str(exc).splitlines()[0] if str(exc) else "lost") from exc
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
                try:
                    self._kept = self.engine.raw_connection()
                except Exception as exc:
                    raise DatabaseUnavailable(str(exc).splitlines()[0]) from exc
            kept = self._kept
            try:
                yield kept.driver_connection
            except psycopg.OperationalError as exc:
                kept.invalidate(exc)
                self._kept = None
                raise DatabaseUnavailable(str(exc).splitlines()[0] if str(exc) else "lost") from exc
