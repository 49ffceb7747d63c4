"""``flowforge token create|list|revoke``: the API's bearer tokens (over ``flowforge.tokens``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import EXIT_CONFIG, CommandError, database_errors, settings

HELP = "create, list and revoke the API's bearer tokens"
DESCRIPTION = (
    "Bearer tokens for the API. A token is shown once, when it is made; the database keeps "
    "only its SHA-256. A revoked token is refused by every API process within 5 seconds."
)
EPILOG = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
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
    actions.add_parser("list", help="names, scopes and dates of every token (never a token)")
    revoke = actions.add_parser("revoke", help="revoke the token NAME (its name stays taken)")
    revoke.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from ..db import ConnectionSource, make_engine
    from ..stores.tokens import TokenStore
    from ..tokens import TokenError, check_name, check_scope

    config = settings()
    try:  # judged before the database is asked
        if args.action == "create":
            check_name(args.name)
            check_scope(args.scope)
    except TokenError as exc:
        raise CommandError(str(exc), EXIT_CONFIG) from None
    engine = make_engine(config, pool_size=1)
    try:
        with database_errors("api_tokens"):
            _act(args, TokenStore(ConnectionSource(engine)))
    except TokenError as exc:  # a name taken, an unknown token
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()
    return 0


def _act(args: argparse.Namespace, store: Any) -> None:
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


def _print_tokens(rows: list[Any]) -> None:
    if not rows:
        print("no tokens (make one with `flowforge token create NAME --scope read|write`)")
        return
    width = max(4, *(len(r.name) for r in rows))
    print(f"{'NAME':<{width}}  SCOPE  CREATED (UTC)        REVOKED (UTC)")
    for r in rows:
        revoked = f"{r.revoked_at:%Y-%m-%d %H:%M:%S}" if r.revoked_at else "-"
        print(f"{r.name:<{width}}  {r.scope:<5}  {r.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
