"""The ``flowforge`` command: a table of commands, one module each.

Each module of ``COMMANDS`` says what its sub-command is for (``HELP``, ``DESCRIPTION``
and ``EPILOG``, None where it has none), adds its options in ``add_arguments(parser)``, and
does it in ``run(args)``, which returns the exit code; a ``CommandError`` it raises is one
line on stderr. The operator scripts (scripts/*.py) run ``seed``,
``healthcheck`` and ``cleanup`` of this package, with ``scripting`` as their shared part.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import ModuleType

from .. import __version__
from . import api, config, migrate, queues, tasks, token, worker
from .common import CommandError, add_command, fail

# In the order `flowforge --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "api": api,
    "worker": worker,
    "migrate": migrate,
    "token": token,
    "tasks": tasks,
    "queues": queues,
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
    for name, module in COMMANDS.items():
        module.add_arguments(add_command(sub, name, module.HELP, module.DESCRIPTION, module.EPILOG))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args))
    except CommandError as exc:
        return fail(str(exc), exc.code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
