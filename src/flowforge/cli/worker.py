"""``flowforge worker``: claim and run tasks until SIGTERM."""

from __future__ import annotations

import argparse

from ..logs import configure_logging
from .common import settings, variables_epilog

HELP = "claim and run tasks until SIGTERM"
DESCRIPTION = (
    "Claim and run tasks until SIGTERM or Ctrl-C: running tasks get WORKER_SHUTDOWN_TIMEOUT "
    "to finish, the rest are given back."
)
EPILOG = variables_epilog("worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None: the worker's configuration is its environment (EPILOG lists it)."""


def run(args: argparse.Namespace) -> int:
    config = settings()
    # The worker logs from a background thread; gunicorn (the API) forks, so it cannot.
    configure_logging("worker", config.log_level, background=True, log_format=config.log_format)
    from ..worker import run_worker

    return run_worker(config)
