"""What the ``flowforge`` commands share: exit codes, one-line failures, the settings, a
sub-command's parser and the variables' part of its ``--help``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..config import VARIABLES, ConfigError, Settings, Variable, load_settings

EXIT_FAILURE = 1  # refused or failed
EXIT_CONFIG = 2  # usage or configuration error


class CommandError(Exception):
    """A failure to report in one line (``flowforge: error: ...``); ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    """Print ``message`` as the one line of a failure and return ``code``."""
    print(f"flowforge: error: {message}", file=sys.stderr)
    return code


def add_command(
    sub: Any, name: str, help: str, description: str | None = None, epilog: str | None = None
) -> argparse.ArgumentParser:
    """Add the sub-command NAME to ``sub`` (the subparsers); an ``epilog`` (the variables a
    service reads, say) is printed as laid out, so its columns survive."""
    laid_out: dict[str, Any] = {}
    if epilog is not None:
        laid_out = {"epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, **laid_out
    )
    return parser


def settings(require: tuple[str, ...] = ("DATABASE_URL",)) -> Settings:
    """The configuration from the environment; a bad variable is a CommandError (exit 2)."""
    try:
        return load_settings(require=require)
    except ConfigError as exc:
        raise CommandError(f"configuration: {exc}", EXIT_CONFIG) from None


@contextmanager
def database_errors(table: str) -> Iterator[None]:
    """A failure talking to PostgreSQL as one line (exit 1): unreachable, not migrated (no
    TABLE), or refused (a role without the rights, say)."""
    import psycopg

    from ..db import DatabaseUnavailable, first_line

    try:
        yield
    except DatabaseUnavailable as exc:
        raise CommandError(f"cannot reach the database: {exc}") from None
    except psycopg.errors.UndefinedTable:
        raise CommandError(
            f"the database has no {table} table: run `flowforge migrate` first"
        ) from None
    except psycopg.Error as exc:
        raise CommandError(f"database error: {first_line(exc)}") from None


def describe(variables: Iterable[Variable]) -> str:
    """``NAME [default]`` and the help indented below it, for an epilog."""
    lines = []
    for v in variables:
        lines.append(f"  {v.name} [{'required' if v.default is None else v.default}]")
        lines.append(textwrap.fill(v.help, 79, initial_indent="      ",
                                   subsequent_indent="      "))  # fmt: skip
    return "\n".join(lines)


def _reads(service: str, name: str) -> bool:
    """Whether ``flowforge SERVICE`` reads the variable NAME."""
    if name.startswith(("DATABASE_", "LOG_")):
        return True
    if service == "api":
        return (name.startswith("API_") and name not in ("API_URL", "API_TOKEN")) or name in (
            "METRICS_ALLOW",
            "TASK_MAX_ATTEMPTS",
            "TASK_TIMEOUT",
            "WORKER_LEASE",
        )
    return name.startswith(("WORKER_", "TASK_"))


def variables_epilog(service: str) -> str:
    """The environment variables SERVICE reads, each with its default and meaning."""
    head = "environment variables (default in brackets; `flowforge config` shows the values):"
    return head + "\n" + describe(v for v in VARIABLES if _reads(service, v.name))
