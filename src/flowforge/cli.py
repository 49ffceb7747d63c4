"""The ``flowforge`` command: api, worker, migrate, config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .config import VARIABLES, ConfigError, load_settings
from .logs import configure_logging

EXIT_CONFIG = 2  # usage or configuration error
EXIT_FAILURE = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowforge",
        description="FlowForge task service. Configuration comes from the environment; "
        "`flowforge config` shows it.",
    )
    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("api", help="serve the HTTP API with gunicorn")
    sub.add_parser("worker", help="claim and run tasks until SIGTERM")
    migrate = sub.add_parser("migrate", help="apply or revert database migrations")
    msub = migrate.add_subparsers(dest="action", metavar="ACTION")
    up = msub.add_parser("up", help="upgrade to the newest revision (the default)")
    up.add_argument("revision", nargs="?", default="head")
    down = msub.add_parser("down", help="downgrade to REVISION (or 'base': drop everything)")
    down.add_argument("revision")
    msub.add_parser("status", help="show the current and newest revision")
    config = sub.add_parser("config", help="print the effective configuration (secrets hidden)")
    config.add_argument("--json", action="store_true", help="as JSON")
    return parser


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"flowforge: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(require=() if args.command == "config" else ("DATABASE_URL",))
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIG)

    if args.command == "config":
        shown = settings.redacted()
        if args.json:
            print(json.dumps(shown, indent=2))
        else:
            width = max(len(v.name) for v in VARIABLES)
            for name, value in shown.items():
                print(f"{name:<{width}}  {value}")
        return 0

    service = "worker" if args.command == "worker" else "api"
    configure_logging(
        service if args.command != "migrate" else "migrate",
        settings.log_level,
        background=args.command == "worker",  # gunicorn forks: threads would not follow
        log_format=settings.log_format,
    )

    if args.command == "api":
        from .server import serve

        serve(settings)
        return 0
    if args.command == "worker":
        from .worker import run_worker

        return run_worker(settings)
    return _migrate(args, settings)


def _migrate(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from . import migrate

    action = args.action or "up"
    try:
        if action == "up":
            migrate.upgrade(settings, args.revision if args.action else "head")
        elif action == "down":
            if args.revision != "base" and args.revision not in migrate.known_revisions(settings):
                return _fail(
                    f"unknown revision {args.revision!r} (try 'base' or one of "
                    f"{', '.join(migrate.known_revisions(settings))})",
                    EXIT_CONFIG,
                )
            migrate.downgrade(settings, args.revision)
        else:
            state = migrate.status(settings)
            print(f"current: {state['current'] or 'base (empty database)'}")
            print(f"head:    {state['head']}")
            pending = state["pending"]
            print(f"pending: {', '.join(pending) if pending else 'none (up to date)'}")  # type: ignore[arg-type]
    except OperationalError as exc:
        return _fail(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}")
    except CommandError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
