"""``VARIABLES``: every environment variable FlowForge reads, with its parser, default and
meaning. ``--help``, ``flowforge config`` and the reference (the env example and
docs/configuration.md) are all made from this table; the worker's part is in
worker_variables.py, ``Variable`` in variable.py."""

from __future__ import annotations

import os

from .values import (
    _auth_mode,
    _database_url,
    _http_url,
    _log_format,
    _log_level,
    _networks,
    _non_negative_int,
    _nonblank,
    _port,
    _positive_duration,
    _positive_int,
    _token,
)
from .variable import Variable
from .worker_variables import WORKER_VARIABLES

__all__ = ["VARIABLES", "Variable"]


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DATABASE_URL",
        "database_url",
        _database_url,
        None,
        "libpq URL of the database: postgresql://user:password@host:5432/db",
        secret=True,
        example="postgresql://flowforge_app:CHANGE-ME@127.0.0.1:5432/flowforge",
    ),
    Variable(
        "DATABASE_POOL_SIZE",
        "database_pool_size",
        _positive_int,
        "2",
        "connections each API process keeps open (gunicorn workers x this must stay "
        "under PostgreSQL's max_connections)",
    ),
    Variable(
        "DATABASE_MAX_OVERFLOW",
        "database_max_overflow",
        int,
        "2",
        "extra connections an API process may open under bursts",
    ),
    Variable(
        "DATABASE_CONNECT_TIMEOUT",
        "database_connect_timeout",
        _positive_duration,
        "3s",
        "how long a new database connection may take",
    ),
    Variable(
        "DATABASE_STATEMENT_TIMEOUT",
        "database_statement_timeout",
        _positive_duration,
        "30s",
        "longest statement the services run before PostgreSQL cancels it",
    ),
    Variable(
        "API_HOST",
        "api_host",
        _nonblank,
        "127.0.0.1",
        "address the API listens on (loopback: nginx in front is the edge; 0.0.0.0 exposes "
        "gunicorn itself, whose sync workers a few slow clients can keep busy)",
        notes=(
            "Loopback is the Ansible roles' layout: nginx on the same host is the edge, and "
            "gunicorn is not reachable from other hosts. Gunicorn's sync workers serve one "
            "connection each, so on 0.0.0.0 as many slow clients as workers keep every other "
            "client waiting (each for up to API_READ_TIMEOUT)"
        ),
    ),
    Variable("API_PORT", "api_port", _port, "8080", "TCP port the API listens on"),
    Variable(
        "API_WORKERS",
        "api_workers",
        _positive_int,
        str(2 * (os.cpu_count() or 1)),
        "gunicorn worker processes (default: 2 x CPU cores)",
        default_text="2 x CPU cores",
    ),
    Variable(
        "API_TIMEOUT",
        "api_timeout",
        _positive_duration,
        "30s",
        "gunicorn kills a worker silent for longer than this",
    ),
    Variable(
        "API_READ_TIMEOUT",
        "api_read_timeout",
        _positive_duration,
        "5s",
        "how long a client may take to send a whole request (line, headers and body), "
        "from its connection; slower: 408 and the connection closed (below API_TIMEOUT)",
        notes=(
            "The 408's code is request_timeout; flowforge api refuses a value not shorter "
            "than API_TIMEOUT. Behind nginx, which buffers requests, it is never reached"
        ),
    ),
    Variable(
        "API_GRACEFUL_TIMEOUT",
        "api_graceful_timeout",
        _positive_duration,
        "20s",
        "on SIGTERM, how long in-flight requests get to finish",
        notes="Keep it below the API unit's TimeoutStopSec= (35s)",
    ),
    Variable(
        "API_MAX_BODY",
        "api_max_body",
        _positive_int,
        str(1024 * 1024),
        "largest request body in bytes (larger: 413)",
        notes=(
            "Keep nginx's client_max_body_size equal (the nginx role's "
            "nginx_client_max_body_size follows flowforge_env_extra.API_MAX_BODY)"
        ),
    ),
    Variable(
        "API_AUTH",
        "api_auth",
        _auth_mode,
        "token",
        "token: /v1 and /tasks need 'Authorization: Bearer <token>' (flowforge token create); "
        "off: no check, refused unless API_HOST is a loopback address",
        notes=(
            "A token is made by `flowforge token create NAME --scope read|write`; off with "
            "any other API_HOST than 127.0.0.1, ::1 or localhost stops the API (exit 2)"
        ),
    ),
    Variable(
        "API_MAX_PENDING",
        "api_max_pending",
        _non_negative_int,
        "0",
        "above this many pending tasks, creating one answers 429 queue_full with "
        "Retry-After (0: no limit); counted at most once a second per process",
        notes=(
            "Retry-After is 5 seconds. Each API process adds what it creates meanwhile, so "
            "the limit holds to within about a second's worth of requests"
        ),
    ),
    Variable(
        "API_URL",
        "api_url",
        _http_url,
        "http://127.0.0.1:8080",
        "where clients such as the scripts reach the API",
    ),
    Variable(
        "API_TOKEN",
        "api_token",
        _token,
        "",
        "bearer token that clients such as the benchmarks send to the API",
        secret=True,
        notes="The services do not read it; make dev prints one",
    ),
    *WORKER_VARIABLES,
    Variable(
        "METRICS_ALLOW",
        "metrics_allow",
        _networks,
        "127.0.0.0/8,::1",
        "addresses or CIDR networks (comma separated) that may read /metrics of the API "
        "and the workers; others get 403",
        notes=(
            "Loopback plus your Prometheus hosts, e.g. 127.0.0.0/8,::1,10.0.9.5. Behind a "
            "proxy on this host every client looks like loopback: the proxy must filter too"
        ),
    ),
    Variable(
        "API_METRICS_DIR",
        "api_metrics_dir",
        str,
        "",
        "where the API's gunicorn workers keep their metrics files, wiped at start "
        "(the unit uses its RuntimeDirectory; empty: a private temporary directory)",
        notes="prometheus-client's multiprocess files; the API's unit uses /run/flowforge-api",
    ),
    Variable(
        "LOG_LEVEL", "log_level", _log_level, "info", "debug, info, warning, error or critical"
    ),
    Variable(
        "LOG_FORMAT",
        "log_format",
        _log_format,
        "json",
        "json (one object per line) or text (one readable line, for a terminal); "
        "journald gets its fields either way",
        notes=(
            "json is what log shippers read; text shows the same fields as key=value (make "
            "dev uses it). The journal's fields are REQUEST_ID, TASK_ID and the like"
        ),
    ),
)
