"""``flowforge worker``: claim and run tasks until SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from ..logs import configure_logging
from .common import settings, variables_epilog


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "worker",
        help="claim and run tasks until SIGTERM",
        description="Claim and run tasks until SIGTERM or Ctrl-C: running tasks get "
        "WORKER_SHUTDOWN_TIMEOUT to finish, the rest are given back.",
        epilog=variables_epilog("worker"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def run(args: argparse.Namespace) -> int:
    config = settings()
    # The worker logs from a background thread; gunicorn (the API) forks, so it cannot.
    configure_logging("worker", config.log_level, background=True, log_format=config.log_format)
    from ..worker import run_worker

    return run_worker(config)
