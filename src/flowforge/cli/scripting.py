"""What the operator scripts (scripts/*.py: seed, healthcheck, cleanup) share: exit codes,
argument types, one-line failures.

Operators run the scripts by hand, from cron and from CI, so every failure is one line on
stderr (``<script>: error: ...``) and a documented exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg

from ..config import ConfigError, Settings, load_settings, redact_url
from ..db import DatabaseUnavailable, connection, first_line, make_engine
from ..durations import format_duration, parse_duration

# 1: unhealthy, database unreachable or refusing, not confirmed; 2: bad options or
# configuration (argparse's own 2): the codes of the flowforge command.
from .common import EXIT_CONFIG as EXIT_USAGE
from .common import EXIT_FAILURE, CommandError

EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES_HELP = """\
exit codes:
  0    {success}
  1    {failure}
  2    usage or configuration error (bad option, bad DATABASE_URL / API_URL)
  130  interrupted (Ctrl-C; 143 for SIGTERM); nothing is left half-written
"""

# Ages for the scripts go beyond the services' durations: "7d", "2w" besides "90m".


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; raised between two steps, never inside a database call."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class GracefulStop:
    """Turn SIGINT/SIGTERM into ``Interrupted`` at the next ``check()``; a second one kills.

    A KeyboardInterrupt raised in the middle of a psycopg call can leave the connection's
    lock held, and the clean-up that follows (COPY's CopyFail, the rollback) then waits on
    it forever: the script hangs instead of stopping. Here the signal only sets a flag; the
    loops call ``check()`` between rows or batches, so the exception leaves from our code and
    the current batch is rolled back whole. A second signal ends the process at once (for a
    statement stuck waiting on a lock or the network).
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __enter__(self) -> GracefulStop:
        self._previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)


def age(text: str) -> float:
    """argparse type: ``500ms``, ``30s``, ``15m``, ``2h``, ``7d`` or ``2w`` in seconds (> 0)."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 15m, 2h, 7d or 2w, got {text!r}"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above zero, got {text!r}")
    return seconds


def add_age_option(parser: argparse.ArgumentParser, flag: str, default: str, help: str) -> None:
    """An ``AGE`` option (``age``) whose help ends with its default: ``(default 5m)``."""
    parser.add_argument(
        flag, type=age, default=age(default), metavar="AGE", help=f"{help} (default {default})"
    )


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected a number of at least {minimum}, got {value}"
            )
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def format_age(seconds: float) -> str:
    """``93784`` -> ``1d 2h``: the two largest units, for human-readable reports."""
    return format_duration(seconds, "units")


def make_parser(
    prog: str, description: str, examples: str, failure: str, success: str = "success"
) -> argparse.ArgumentParser:
    """A parser whose --help ends with examples and the exit codes (``failure``: what 1 means)."""
    epilog = f"examples:\n{examples}\n{EXIT_CODES_HELP.format(success=success, failure=failure)}"
    # The raw formatter keeps the examples' columns; the description's paragraphs (one a
    # line) are wrapped here.
    wrapped = "\n\n".join(textwrap.fill(line, 79) for line in description.splitlines())
    return argparse.ArgumentParser(
        prog=prog,
        description=wrapped,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def settings_from_env(*, require: tuple[str, ...], **overrides: str | None) -> Settings:
    """``load_settings`` with command-line overrides (by variable name) applied first."""
    env = dict(os.environ)
    env.update({name: value for name, value in overrides.items() if value is not None})
    try:
        return load_settings(env, require=require)
    except ConfigError as exc:
        raise CommandError(f"configuration: {exc}", EXIT_USAGE) from None


def database_label(url: str) -> str:
    """``host:port/dbname`` for messages: where the script went, without credentials."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "localhost"
    return f"{host}:{port or 5432}{parts.path}"


def database_error(exc: BaseException, url: str) -> CommandError:
    """One line for anything that went wrong talking to PostgreSQL."""
    where = database_label(url)
    if isinstance(exc, DatabaseUnavailable):
        return CommandError(f"cannot reach the database at {where}: {_first_line(exc)}")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return CommandError(f"database {where} has no tasks table: run `flowforge migrate` first")
    return CommandError(f"database error at {where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends "(Background on this error at ...)" lines; libpq repeats the host.
    line = first_line(exc)
    return redact_url(line) if "://" in line else line


def run(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a script's main: CommandError, Ctrl-C and the unexpected become one line."""
    try:
        return main(argv)
    except CommandError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.code
    except Interrupted as exc:
        print(f"{prog}: interrupted ({exc})", file=sys.stderr)
        return 128 + exc.signum  # what a shell reports for a process the signal killed
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `healthcheck.py | head -1`: the reader left; nothing to say to it.
        sys.stderr.close()
        return EXIT_FAILURE
    except Exception as exc:  # the promise to cron: one line, never a traceback
        print(
            f"{prog}: error: unexpected {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr
        )
        return EXIT_FAILURE


def script_entry(
    prog: str, main: Callable[[Sequence[str] | None], int]
) -> Callable[[Sequence[str] | None], int]:
    """The function a scripts/*.py file calls: ``main`` through ``run``."""

    def entry(argv: Sequence[str] | None = None) -> int:
        return run(prog, main, argv)

    return entry


@contextmanager
def database(settings: Settings) -> Iterator[psycopg.Connection]:
    """One autocommit connection (flowforge.db), every failure turned into a CommandError."""
    url = settings.database_url
    try:
        engine = make_engine(settings, pool_size=1)
    except Exception as exc:  # SQLAlchemy refuses a malformed URL (a bad port, say)
        raise CommandError(f"configuration: DATABASE_URL: {_first_line(exc)}", EXIT_USAGE) from None
    try:
        with connection(engine) as conn:
            yield conn
    except (DatabaseUnavailable, psycopg.Error) as exc:
        raise database_error(exc, url) from None
    finally:
        engine.dispose()
