"""The ``flowforge`` command: a table of commands, one module each.

Each module of ``COMMANDS`` has ``add_parser(subparsers)``, which adds its sub-command and
options, and ``run(args)``, which does it and returns the exit code; a ``CommandError`` it
raises is one line on stderr. The operator scripts (scripts/*.py) run ``seed``,
``healthcheck`` and ``cleanup`` of this package, with ``scripting`` as their shared part.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from . import api, config, migrate, tasks, token, worker
from .common import CommandError, fail

# In the order `flowforge --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "api": api,
    "worker": worker,
    "migrate": migrate,
    "token": token,
    "tasks": tasks,
    "config": config,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowforge",
        description="FlowForge task service. Configuration comes from the environment; "
        "`flowforge config` shows it.",
    )
    parser.add_argument("--version", action="version", version=f"flowforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args))
    except CommandError as exc:
        return fail(str(exc), exc.code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
