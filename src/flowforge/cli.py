"""The ``flowforge`` command: api, worker, migrate, token, tasks, config."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from . import __version__, tasks_cli
from .config import VARIABLES, ConfigError, check_api_auth, load_settings
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
    api = sub.add_parser(
        "api",
        help="serve the HTTP API with gunicorn",
        description="Serve the HTTP API with gunicorn until SIGTERM or Ctrl-C (graceful).",
        epilog=_variables_epilog("api"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    api.add_argument(
        "--env-file",
        metavar="PATH",
        help="re-read this systemd EnvironmentFile on reload (SIGHUP)",
    )
    api.add_argument(
        "--reload",
        metavar="PID",
        type=int,
        help="reload the API whose gunicorn arbiter is PID (new workers with the installed "
        "code and the env file) and wait until no old worker is left; exit 1 if it fails",
    )
    sub.add_parser(
        "worker",
        help="claim and run tasks until SIGTERM",
        description="Claim and run tasks until SIGTERM or Ctrl-C: running tasks get "
        "WORKER_SHUTDOWN_TIMEOUT to finish, the rest are given back.",
        epilog=_variables_epilog("worker"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate = sub.add_parser("migrate", help="apply or revert database migrations")
    msub = migrate.add_subparsers(dest="action", metavar="ACTION")
    up = msub.add_parser("up", help="upgrade to the newest revision (the default)")
    up.add_argument("revision", nargs="?", default="head")
    down = msub.add_parser(
        "down",
        help="downgrade to REVISION (or 'base': drop everything)",
        description="Downgrade to REVISION, or to 'base' (every table dropped, data lost). "
        "On a terminal it asks first; elsewhere it needs --yes.",
    )
    down.add_argument("revision")
    down.add_argument("-y", "--yes", action="store_true", help="do not ask: downgrade now")
    msub.add_parser("status", help="show the current and newest revision")
    token = sub.add_parser(
        "token",
        help="create, list and revoke the API's bearer tokens",
        description="Bearer tokens for the API. A token is shown once, when it is made; "
        "the database keeps only its SHA-256. A revoked token is refused by every API "
        "process within 5 seconds.",
    )
    tsub = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create",
        help="make a token and print it (alone, on stdout)",
        description="Make a token named NAME and print it, alone, on stdout: "
        'TOKEN=$(flowforge token create NAME --scope read). "read" may GET; '
        '"write" may also create, change and delete tasks.',
    )
    create.add_argument("name", metavar="NAME", help="a unique label (letters, digits, ._@:-)")
    create.add_argument(
        "--scope", metavar="read|write", required=True, help="what the token may do"
    )
    tsub.add_parser("list", help="names, scopes and dates of every token (never a token)")
    revoke = tsub.add_parser("revoke", help="revoke the token NAME (its name stays taken)")
    revoke.add_argument("name", metavar="NAME")
    tasks_cli.add_parser(sub)
    config = sub.add_parser(
        "config",
        help="print the effective configuration (secrets hidden)",
        description="Print the effective configuration: every variable FlowForge reads "
        "from the environment, secrets hidden.",
        epilog="variables (default in brackets):\n"
        + "\n".join(
            f"  {v.name} [{'required' if v.default is None else v.default}]\n"
            + textwrap.fill(v.help, 79, initial_indent="      ", subsequent_indent="      ")
            for v in VARIABLES
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_argument("--json", action="store_true", help="as JSON")
    return parser


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


def _variables_epilog(service: str) -> str:
    """The environment variables SERVICE reads, each with its default and meaning."""
    lines = ["environment variables (default in brackets; `flowforge config` shows the values):"]
    for v in VARIABLES:
        if _reads(service, v.name):
            lines.append(f"  {v.name} [{'required' if v.default is None else v.default}]")
            lines.append(textwrap.fill(v.help, 79, initial_indent="      ",
                                       subsequent_indent="      "))  # fmt: skip
    return "\n".join(lines)


def _confirm_downgrade(revision: str, settings) -> int | None:  # type: ignore[no-untyped-def]
    """Ask on a terminal before a downgrade; refuse without one. ``None``: go ahead."""
    from .config import redact_url

    what = "drop every table" if revision == "base" else f"downgrade to {revision}"
    target = redact_url(settings.database_url)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return _fail(f"migrate down would {what} in {target}: add --yes to confirm", EXIT_CONFIG)
    print(f"This will {what} in {target} (data may be lost).", file=sys.stderr)
    try:
        answer = input("Type 'yes' to go on: ")
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        return _fail("migrate down: not confirmed, nothing changed", EXIT_FAILURE)
    return None


def _fail(message: str, code: int = EXIT_FAILURE) -> int:
    print(f"flowforge: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "api" and args.reload is not None:
        return _reload_api(args.reload)
    try:
        settings = load_settings(require=() if args.command == "config" else ("DATABASE_URL",))
    except ConfigError as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIG)

    if args.command == "config":
        shown = settings.redacted()
        missing = [v.name for v in VARIABLES if v.default is None and not shown.get(v.name)]
        if args.json:
            print(json.dumps({k: None if k in missing else v for k, v in shown.items()}, indent=2))
        else:
            width = max(len(v.name) for v in VARIABLES)
            for name, value in shown.items():
                print(f"{name:<{width}}  {'(required, not set)' if name in missing else value}")
        if missing:
            return _fail(f"configuration: {', '.join(missing)}: required but not set", EXIT_CONFIG)
        return 0

    if args.command == "token":
        return _token(args, settings)
    if args.command == "tasks":
        return tasks_cli.run(args, settings)

    service = "worker" if args.command == "worker" else "api"
    configure_logging(
        service if args.command != "migrate" else "migrate",
        settings.log_level,
        background=args.command == "worker",  # gunicorn forks: threads would not follow
        log_format=settings.log_format,
    )

    if args.command == "api":
        try:
            check_api_auth(settings)
        except ConfigError as exc:
            return _fail(f"configuration: {exc}", EXIT_CONFIG)
        from .api.server import serve

        serve(settings, Path(args.env_file) if args.env_file else None)
        return 0
    if args.command == "worker":
        from .worker import run_worker

        return run_worker(settings)
    return _migrate(args, settings)


def _token(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from .db import ConnectionSource, DatabaseUnavailable, first_line, make_engine
    from .tokens import TokenError, TokenStore, check_name, check_scope

    try:  # judged before the database is asked
        if args.action == "create":
            check_name(args.name)
            check_scope(args.scope)
    except TokenError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    engine = make_engine(settings, pool_size=1)
    store = TokenStore(ConnectionSource(engine))
    try:
        if args.action == "create":
            token, _ = store.create(args.name, args.scope)
            print(token)
        elif args.action == "list":
            _print_tokens(store.list())
        else:
            row, already = store.revoke(args.name)
            if already:
                when = f"{row.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
                print(f"token {row.name!r} was already revoked at {when}", file=sys.stderr)
            else:
                print(f"revoked token {row.name!r} ({row.scope})", file=sys.stderr)
    except TokenError as exc:
        return _fail(str(exc))
    except DatabaseUnavailable as exc:
        return _fail(f"cannot reach the database: {exc}")
    except Exception as exc:  # an unmigrated database, a refused role: one line
        import psycopg

        if isinstance(exc, psycopg.errors.UndefinedTable):
            return _fail("the database has no api_tokens table: run `flowforge migrate` first")
        if isinstance(exc, psycopg.Error):
            return _fail(f"database error: {first_line(exc)}")
        raise
    finally:
        engine.dispose()
    return 0


def _print_tokens(rows) -> None:  # type: ignore[no-untyped-def]
    if not rows:
        print("no tokens (make one with `flowforge token create NAME --scope read|write`)")
        return
    width = max(4, *(len(r.name) for r in rows))
    print(f"{'NAME':<{width}}  SCOPE  CREATED (UTC)        REVOKED (UTC)")
    for r in rows:
        revoked = f"{r.revoked_at:%Y-%m-%d %H:%M:%S}" if r.revoked_at else "-"
        print(f"{r.name:<{width}}  {r.scope:<5}  {r.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")


def _reload_api(pid: int) -> int:
    from .api.server import ReloadError, reload

    try:
        seconds = reload(pid)
    except ReloadError as exc:
        return _fail(f"reload: {exc}")
    print(f"flowforge: API reloaded in {seconds:.1f}s (arbiter {pid})", file=sys.stderr)
    return 0


def _migrate(args: argparse.Namespace, settings) -> int:  # type: ignore[no-untyped-def]
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from . import migrate
    from .db import first_line

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
            if not args.yes:
                refusal = _confirm_downgrade(args.revision, settings)
                if refusal is not None:
                    return refusal
            migrate.downgrade(settings, args.revision)
        else:
            state = migrate.status(settings)
            print(f"current: {state['current'] or 'base (empty database)'}")
            print(f"head:    {state['head']}")
            pending = state["pending"]
            print(f"pending: {', '.join(pending) if pending else 'none (up to date)'}")  # type: ignore[arg-type]
    except OperationalError as exc:
        return _fail(f"cannot reach the database: {first_line(exc.orig)}")
    except CommandError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
