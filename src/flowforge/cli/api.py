"""``flowforge api``: serve the HTTP API with gunicorn, or reload a running one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, check_api_auth, check_api_timeouts
from ..logs import configure_logging
from .common import EXIT_CONFIG, CommandError, settings, variables_epilog

HELP = "serve the HTTP API with gunicorn"
DESCRIPTION = "Serve the HTTP API with gunicorn until SIGTERM or Ctrl-C (graceful)."
EPILOG = variables_epilog("api")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="re-read this systemd EnvironmentFile on reload (SIGHUP)",
    )
    parser.add_argument(
        "--reload",
        metavar="PID",
        type=int,
        help="reload the API whose gunicorn arbiter is PID (new workers with the installed "
        "code and the env file) and wait until no old worker is left; exit 1 if it fails",
    )


def run(args: argparse.Namespace) -> int:
    if args.reload is not None:  # ExecReload: the arbiter has the configuration
        return _reload(args.reload)
    config = settings()
    configure_logging("api", config.log_level, background=False, log_format=config.log_format)
    try:
        check_api_auth(config)
        check_api_timeouts(config)
    except ConfigError as exc:
        raise CommandError(f"configuration: {exc}", EXIT_CONFIG) from None
    from ..api.server import serve

    serve(config, Path(args.env_file) if args.env_file else None)
    return 0


def _reload(pid: int) -> int:
    from ..api.server import ReloadError, reload

    try:
        seconds = reload(pid)
    except ReloadError as exc:
        raise CommandError(f"reload: {exc}") from None
    print(f"flowforge: API reloaded in {seconds:.1f}s (arbiter {pid})", file=sys.stderr)
    return 0
