"""``Settings``: the environment read through ``VARIABLES`` (``load_settings``), the checks
across variables, and the helpers that show or re-read a configuration."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..durations import format_duration
from .values import DURATION_PARSERS, is_loopback
from .variables import VARIABLES


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


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
    task_attempts_kept: int
    task_retention: float
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
            if var.parse in DURATION_PARSERS and isinstance(value, int | float):
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
