"""``VARIABLES``: every environment variable FlowForge reads, with its parser, default and
meaning. ``--help``, ``flowforge config`` and the reference (the env example and
docs/configuration.md) are all made from this table."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..domain.fields import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT
from ..durations import format_duration
from .values import (
    _auth_mode,
    _database_url,
    _http_url,
    _isolation,
    _log_format,
    _log_level,
    _networks,
    _non_negative_int,
    _nonblank,
    _port,
    _port_or_zero,
    _positive_duration,
    _positive_int,
    _queues,
    _size,
    _task_timeout,
    _token,
)


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, parser, default and meaning.

    ``help`` is the short meaning (``--help``, ``flowforge config``); the reference made from
    this table (deploy/systemd/flowforge.env.example and docs/configuration.md, by
    ``flowforge config --format env|markdown``) adds ``notes`` after it.
    """

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None  # None: required
    help: str
    secret: bool = False
    notes: str = ""  # sentences for the reference: advice, units, what it must stay below
    default_text: str | None = None  # the reference's words for a default computed per host
    example: str | None = None  # a required variable's value in the env example


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
    Variable(
        "WORKER_POLL_INTERVAL",
        "worker_poll_interval",
        _positive_duration,
        "5s",
        "idle workers poll this often in case a notification was missed",
    ),
    Variable(
        "WORKER_CONCURRENCY",
        "worker_concurrency",
        _positive_int,
        "8",
        "tasks one worker process runs at a time",
        notes="With process isolation, that many handler processes",
    ),
    Variable(
        "WORKER_BATCH_SIZE",
        "worker_batch_size",
        _positive_int,
        "50",
        "most tasks one claim takes at once",
    ),
    Variable(
        "WORKER_LEASE",
        "worker_lease",
        _positive_duration,
        "30s",
        "how long a claim holds without a heartbeat before the task is given back",
    ),
    Variable(
        "WORKER_SHUTDOWN_TIMEOUT",
        "worker_shutdown_timeout",
        _positive_duration,
        "30s",
        "on SIGTERM, how long running tasks get to finish before they are given back",
        notes="Keep it below TimeoutStopSec= of the worker units (45s)",
    ),
    Variable(
        "WORKER_MAX_LEASE_EXPIRIES",
        "worker_max_lease_expiries",
        _positive_int,
        "5",
        "a task whose lease expired this often is failed (crash loop / poison task)",
    ),
    Variable(
        "WORKER_QUEUES",
        "worker_queues",
        _queues,
        "*",
        "the queues a worker claims from: * (every queue) or a comma list",
        notes='A list reads emails,reports; a task names its queue in "queue" (default: default)',
    ),
    Variable(
        "WORKER_ISOLATION",
        "worker_isolation",
        _isolation,
        "process",
        "process: handlers run in child processes (a crash, hang or leak costs only its "
        "own task); thread: in the worker's threads (trusted, short handlers only)",
        notes=(
            "With process, a timeout terminates the handler's process; with thread, a crash"
            " takes the worker down and a timeout only sets task.cancelled"
        ),
    ),
    Variable(
        "WORKER_MAX_TASKS_PER_CHILD",
        "worker_max_tasks_per_child",
        _non_negative_int,
        "0",
        "a handler process is replaced after this many tasks (0: never)",
    ),
    Variable(
        "WORKER_MAX_CHILD_MEMORY",
        "worker_max_child_memory",
        _size,
        "0",
        "a handler process whose peak memory (RSS) passed this is replaced after its task, "
        "e.g. 512MB (0: no limit)",
    ),
    Variable(
        "WORKER_CANCEL_GRACE",
        "worker_cancel_grace",
        _positive_duration,
        "5s",
        "how long a handler has to stop after task.cancelled is set before its process is "
        "terminated",
        notes="A cancel is POST /v1/tasks/{id}/cancel or `flowforge tasks cancel ID`",
    ),
    Variable(
        "WORKER_KILL_GRACE",
        "worker_kill_grace",
        _positive_duration,
        "5s",
        "a handler process that outlives its timeout or cancel grace gets SIGTERM, and "
        "SIGKILL this long after",
    ),
    Variable(
        "TASK_MAX_ATTEMPTS",
        "task_max_attempts",
        _positive_int,
        str(DEFAULT_MAX_ATTEMPTS),
        "attempts a task gets unless it says otherwise",
    ),
    Variable(
        "TASK_TIMEOUT",
        "task_timeout",
        _task_timeout,
        format_duration(DEFAULT_TIMEOUT),  # 15m
        "how long one attempt of a task may run unless it says otherwise (1s to 24h)",
        notes="Whole seconds (the tasks.timeout column)",
    ),
    Variable(
        "TASK_ATTEMPTS_KEPT",
        "task_attempts_kept",
        _positive_int,
        "25",
        "attempts kept per task in its history (GET /v1/tasks/{id}/attempts; oldest dropped)",
        notes="Each is a few hundred bytes in the task's row, a traceback up to 16 KiB more",
    ),
    Variable(
        "TASK_RETRY_BACKOFF",
        "task_retry_backoff",
        _positive_duration,
        "1s",
        "base of the exponential retry backoff (doubles each attempt, with jitter)",
    ),
    Variable(
        "TASK_RETRY_BACKOFF_MAX",
        "task_retry_backoff_max",
        _positive_duration,
        "10m",
        "longest wait between two attempts",
    ),
    Variable(
        "WORKER_METRICS_PORT",
        "worker_metrics_port",
        _port_or_zero,
        "9464",
        "TCP port of a worker's own /metrics; instance N of flowforge-worker@N adds N-1; "
        "0 turns worker metrics off",
        notes=(
            "flowforge-worker.service is instance 1. A port already in use is logged and "
            "the worker runs on without metrics"
        ),
    ),
    Variable(
        "WORKER_METRICS_HOST",
        "worker_metrics_host",
        _nonblank,
        "0.0.0.0",
        "address a worker's /metrics listens on (METRICS_ALLOW decides who may read it)",
    ),
    Variable(
        "WORKER_INSTANCE",
        "worker_instance",
        _positive_int,
        "1",
        "which worker process of this host this is (flowforge-worker@N sets N); "
        "offsets WORKER_METRICS_PORT",
        notes=(
            "The template unit sets it itself (Environment=WORKER_INSTANCE=%i): leave it "
            "out of the env file"
        ),
    ),
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
