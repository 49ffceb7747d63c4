"""``flowforge migrate up|down|status``: the database schema (over ``flowforge.migrate``)."""

from __future__ import annotations

import argparse
import sys

from ..config import Settings, redact_url
from ..logs import configure_logging
from .common import EXIT_CONFIG, CommandError, settings

HELP = "apply or revert database migrations"
DESCRIPTION = None
EPILOG = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    up = actions.add_parser("up", help="upgrade to the newest revision (the default)")
    up.add_argument("revision", nargs="?", default="head")
    down = actions.add_parser(
        "down",
        help="downgrade to REVISION (or 'base': drop everything)",
        description="Downgrade to REVISION, or to 'base' (every table dropped, data lost). "
        "On a terminal it asks first; elsewhere it needs --yes.",
    )
    down.add_argument("revision")
    down.add_argument("-y", "--yes", action="store_true", help="do not ask: downgrade now")
    actions.add_parser("status", help="show the current and newest revision")


def run(args: argparse.Namespace) -> int:
    from alembic.util import CommandError as AlembicError
    from sqlalchemy.exc import OperationalError

    from .. import migrate
    from ..db import first_line

    config = settings()
    configure_logging("migrate", config.log_level, background=False, log_format=config.log_format)
    try:
        if args.action == "down":
            _downgrade(config, args.revision, confirmed=args.yes)
        elif args.action == "status":
            _status(config)
        else:  # "up", or no action at all
            migrate.upgrade(config, args.revision if args.action else "head")
    except OperationalError as exc:
        raise CommandError(f"cannot reach the database: {first_line(exc.orig)}") from None
    except AlembicError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None
    return 0


def _downgrade(config: Settings, revision: str, *, confirmed: bool) -> None:
    from .. import migrate

    if revision != "base" and revision not in migrate.known_revisions(config):
        raise CommandError(
            f"unknown revision {revision!r} (try 'base' or one of "
            f"{', '.join(migrate.known_revisions(config))})",
            EXIT_CONFIG,
        )
    if not confirmed:
        _confirm(revision, config)
    migrate.downgrade(config, revision)


def _confirm(revision: str, config: Settings) -> None:
    """Ask on a terminal before a downgrade; refuse without one (CommandError)."""
    what = "drop every table" if revision == "base" else f"downgrade to {revision}"
    target = redact_url(config.database_url)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise CommandError(f"migrate down would {what} in {target}: add --yes to confirm",
                           EXIT_CONFIG)  # fmt: skip
    print(f"This will {what} in {target} (data may be lost).", file=sys.stderr)
    try:
        answer = input("Type 'yes' to go on: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        raise CommandError("migrate down: not confirmed, nothing changed")


def _status(config: Settings) -> None:
    from .. import migrate

    state = migrate.status(config)
    print(f"current: {state['current'] or 'base (empty database)'}")
    print(f"head:    {state['head']}")
    pending = state["pending"]
    print(f"pending: {', '.join(pending) if pending else 'none (up to date)'}")  # type: ignore[arg-type]
