"""``flowforge config``: the effective configuration, secrets hidden."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import VARIABLES
from .common import EXIT_CONFIG, CommandError, describe, settings


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "config",
        help="print the effective configuration (secrets hidden)",
        description="Print the effective configuration: every variable FlowForge reads "
        "from the environment, secrets hidden.",
        epilog="variables (default in brackets):\n" + describe(VARIABLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    shown = settings(require=()).redacted()
    missing = [v.name for v in VARIABLES if v.default is None and not shown.get(v.name)]
    if args.json:
        print(json.dumps({k: None if k in missing else v for k, v in shown.items()}, indent=2))
    else:
        width = max(len(v.name) for v in VARIABLES)
        for name, value in shown.items():
            print(f"{name:<{width}}  {'(required, not set)' if name in missing else value}")
    if missing:
        raise CommandError(f"configuration: {', '.join(missing)}: required but not set",
                           EXIT_CONFIG)  # fmt: skip
    return 0
