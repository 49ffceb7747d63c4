"""Configuration from the environment (12-factor), in one place.

Every variable the services and scripts read is declared in ``VARIABLES``; ``load_settings``
turns the environment into a frozen ``Settings`` or raises ``ConfigError`` naming the first
variable that is missing or malformed. Nothing else in the package reads ``os.environ``
for configuration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Also imported from here (flowforge.config.parse_duration): the settings' own syntax.
from .durations import format_duration, parse_duration

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a number of at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise ValueError(f"expected a TCP port (1-65535), got {value}")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"expected a duration above zero, got {text!r}")
    return value


def _task_timeout(text: str) -> int:
    """A task's time limit: whole seconds from 1s to 24h (the tasks.timeout column)."""
    value = parse_duration(text)
    if value != int(value) or not 1 <= value <= 86_400:
        raise ValueError(f"expected whole seconds from 1s to 24h, such as 30s or 15m, got {text!r}")
    return int(value)


_DURATION_PARSERS: frozenset[Callable[[str], Any]] = frozenset({_positive_duration, _task_timeout})

_QUEUE_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
ISOLATIONS = ("process", "thread")
_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _queues(text: str) -> tuple[str, ...]:
    """``*`` (every queue) or a comma list of queue names (``[a-z0-9_-]{1,64}``)."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if names == ("*",):
        return names
    if not names:
        raise ValueError("expected * or a comma list of queue names")
    for name in names:
        if not _QUEUE_NAME.match(name):
            raise ValueError(
                f"expected * or queue names of a-z, 0-9, _ and - (1 to 64), got {name!r}"
            )
    return names


def _isolation(text: str) -> str:
    value = text.strip().lower()
    if value not in ISOLATIONS:
        raise ValueError(f"expected one of {', '.join(ISOLATIONS)}, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a number of at least 0, got {value}")
    return value


def _size(text: str) -> int:
    """Bytes: ``0`` (off), ``800MB``, ``2GiB``, ``65536`` (KB, MB, GB are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 0, 512MB or 2GB, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()[:1]]


def _database_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("postgresql", "postgres") or not (parts.path.strip("/")):
        raise ValueError("expected a libpq URL such as postgresql://user:password@host:5432/dbname")
    return text.strip()


def _http_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"expected a valid port in {text!r}") from None
    return text.strip().rstrip("/")


def _log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return value


def _port_or_zero(text: str) -> int:
    text = text.strip()
    return 0 if text == "0" else _port(text)


LOG_FORMATS = ("json", "text")


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"expected one of {', '.join(LOG_FORMATS)}, got {text!r}")
    return value


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``127.0.0.0/8, ::1, 10.0.0.5``: addresses or CIDR networks, comma separated."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"expected IP addresses or CIDR networks, got {item!r}") from None
    return tuple(networks)


def address_allowed(address: str | None, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    """Whether a peer's IP address (``REMOTE_ADDR``) is in one of ``networks``."""
    if not address:
        return False
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.5 on a v6 socket
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


AUTH_MODES = ("token", "off")


def _auth_mode(text: str) -> str:
    value = text.strip().lower()
    if value not in AUTH_MODES:
        raise ValueError(f"expected one of {', '.join(AUTH_MODES)}, got {text!r}")
    return value


def _token(text: str) -> str:
    value = text.strip()
    if any(c.isspace() for c in value):
        raise ValueError("a token has no blanks in it")
    return value


def is_loopback(host: str) -> bool:
    """Is ``host`` (an ``API_HOST``) reachable from this machine only? Loopback addresses,
    ``localhost`` and a unix socket (``unix:/path``) are."""
    host = host.strip()
    if host.startswith("unix:") or host.lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text.strip()


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
        "3",
        "attempts a task gets unless it says otherwise",
    ),
    Variable(
        "TASK_TIMEOUT",
        "task_timeout",
        _task_timeout,
        "15m",
        "how long one attempt of a task may run unless it says otherwise (1s to 24h)",
        notes="Whole seconds (the tasks.timeout column)",
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


@dataclass(frozen=True)
class Settings:
    """The effective configuration; build it with ``load_settings``."""

    database_url: str
    database_pool_size: int
    database_max_overflow: int
    database_connect_timeout: float
    database_statement_timeout: float
    api_host: str
    api_port: int
    api_workers: int
    api_timeout: float
    api_read_timeout: float
    api_graceful_timeout: float
    api_max_body: int
    api_auth: str
    api_max_pending: int
    api_url: str
    api_token: str
    worker_poll_interval: float
    worker_concurrency: int
    worker_batch_size: int
    worker_lease: float
    worker_shutdown_timeout: float
    worker_max_lease_expiries: int
    worker_queues: tuple[str, ...]
    worker_isolation: str
    worker_max_tasks_per_child: int
    worker_max_child_memory: int
    worker_cancel_grace: float
    worker_kill_grace: float
    task_max_attempts: int
    task_timeout: int
    task_retry_backoff: float
    task_retry_backoff_max: float
    worker_metrics_port: int
    worker_metrics_host: str
    worker_instance: int
    metrics_allow: tuple[IPv4Network | IPv6Network, ...]
    api_metrics_dir: str
    log_level: str
    log_format: str

    @property
    def worker_metrics_address(self) -> tuple[str, int] | None:
        """Where this worker serves /metrics (its instance's port), or None when off."""
        if not self.worker_metrics_port:
            return None
        return self.worker_metrics_host, self.worker_metrics_port + self.worker_instance - 1

    def redacted(self) -> dict[str, Any]:
        """The settings by variable name, with passwords replaced by ``***``."""
        out: dict[str, Any] = {}
        for var in VARIABLES:
            value = getattr(self, var.field)
            if isinstance(value, tuple):  # networks
                value = ",".join(str(item) for item in value)
            if var.secret and value and "://" not in value:
                value = "***"  # a token: nothing of it is shown
            if var.parse in _DURATION_PARSERS and isinstance(value, int | float):
                value = format_duration(value)
            out[var.name] = redact_url(value) if var.secret else value
        return out


def check_api_auth(settings: Settings) -> None:
    """``API_AUTH=off`` only where nobody else can connect: raise ``ConfigError`` unless
    ``API_HOST`` is a loopback address."""
    if settings.api_auth == "off" and not is_loopback(settings.api_host):
        raise ConfigError(
            "API_AUTH",
            f"off is refused unless API_HOST is a loopback address (127.0.0.1, ::1, "
            f"localhost); API_HOST is {settings.api_host}",
        )


def check_api_timeouts(settings: Settings) -> None:
    """A request must be read before gunicorn would kill its worker for silence: raise
    ``ConfigError`` unless ``API_READ_TIMEOUT`` is shorter than ``API_TIMEOUT``."""
    if settings.api_read_timeout >= settings.api_timeout:
        raise ConfigError(
            "API_READ_TIMEOUT",
            f"must be shorter than API_TIMEOUT ({format_duration(settings.api_timeout)}); "
            f"it is {format_duration(settings.api_read_timeout)}",
        )


_SECRET_PARAMS = frozenset({"password", "sslpassword"})  # libpq's secret URL parameters


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db?sslpassword=x`` -> ``postgresql://u:***@h/db?sslpassword=***``:
    the password in the authority and libpq's secret query parameters."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{netloc[1]}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() in _SECRET_PARAMS for name, _ in query):
        hidden = [(n, "***" if n.lower() in _SECRET_PARAMS else v) for n, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*/:,"))
    return urlunsplit(parts)


def load_settings(
    environ: Mapping[str, str] | None = None, *, require: tuple[str, ...] = ("DATABASE_URL",)
) -> Settings:
    """Read every variable; raise ``ConfigError`` for the first missing or bad one.

    ``require`` names the variables without a default that this process needs; the
    others fall back to an empty value (scripts that only talk HTTP need no database).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.name)
        if raw is None or raw.strip() == "":
            if var.default is None:
                if var.name in require:
                    raise ConfigError(var.name, "is required but not set")
                values[var.field] = ""
                continue
            raw = var.default
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            raise ConfigError(var.name, str(exc)) from None
    return Settings(**values)


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of a systemd ``EnvironmentFile=`` (``NAME=value`` lines; ``#`` and ``;``
    start comments; a value may be quoted), as systemd would set them.

    ``flowforge api --env-file`` re-reads it on reload: systemd read it once at start, and a
    reload must pick up what the deploy wrote since. Raises ``OSError`` if unreadable and
    ``ValueError`` naming the line number of a line that is not ``NAME=value``.
    """
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{path}, line {number}: expected NAME=value")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name] = value
    return values
