"""``flowforge api``: gunicorn serving the app, configured from the environment."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from .config import Settings

log = logging.getLogger("flowforge.api")


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (bad request line, oversized headers,
    broken chunking), in FlowForge's JSON envelope with a request ID instead of gunicorn's
    HTML page: such requests never reach the app, so this is the only place to fix them."""
    from .app import ERROR_CODES, REQUEST_ID_HEADER, error_body, request_id_from

    rid = request_id_from(None)
    code = ERROR_CODES.get(status_int, "internal_error" if status_int >= 500 else "bad_request")
    body = error_body(code, mesg or reason)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {rid}\r\n\r\n"
    )
    log.warning("malformed request: %s %s", status_int, mesg, extra={"request_id": rid})
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


def prepare_metrics_dir(directory: str) -> None:
    """Before any gunicorn worker starts (and before prometheus-client is imported, which
    picks its multiprocess mode from the environment at import): the workers' metrics
    files go to ``directory``, emptied of a previous run's, so counters start at zero with
    the service. A reload (HUP) keeps them: the sums go on across new workers."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's hook in the arbiter when a worker exits: its live gauges go, its
    counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


class JsonGunicornLogger(GunicornLogger):
    """gunicorn's own messages go through our JSON (or journald) handler.

    The app logs one access line per request itself, with the request ID, so gunicorn's
    access log stays off.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True
        self.error_log.setLevel(logging.NOTSET)


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": [f"{s.api_host}:{s.api_port}"],
            "workers": s.api_workers,
            # Sync workers measured fastest here (FIELD-NOTES); one request at a time per
            # process, so a pool of DATABASE_POOL_SIZE per process is plenty.
            "worker_class": "sync",
            "timeout": int(s.api_timeout),
            "graceful_timeout": int(s.api_graceful_timeout),
            "keepalive": 5,
            "proc_name": "flowforge-api",
            "logger_class": JsonGunicornLogger,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level,
            "limit_request_line": 8190,
            # Behind a proxy (Vagrant port forward, a load balancer), trust nobody's
            # X-Forwarded-* unless the operator sets FORWARDED_ALLOW_IPS.
            "forwarded_allow_ips": "127.0.0.1",
            "child_exit": child_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)
        # gunicorn's workers call util.write_error for requests they cannot parse.
        gunicorn_util.write_error = write_json_error

    def load(self) -> Any:
        from .app import create_app

        # A sync worker runs one request at a time: it keeps its database connection.
        return create_app(self.settings, keep_connection=True)


def serve(settings: Settings) -> None:
    """Run gunicorn in the foreground until SIGTERM/SIGINT (graceful) or SIGQUIT."""
    own_dir = None
    arbiter = os.getpid()
    if settings.api_metrics_dir:
        prepare_metrics_dir(settings.api_metrics_dir)
    else:  # a private directory of our own, gone when the API stops
        own_dir = tempfile.mkdtemp(prefix="flowforge-api-metrics-")
        prepare_metrics_dir(own_dir)
    try:
        ApiServer(settings).run()
    finally:
        # gunicorn's workers leave run() through here too (SystemExit): only the arbiter
        # removes the directory, once every worker has gone.
        if own_dir is not None and os.getpid() == arbiter:
            shutil.rmtree(own_dir, ignore_errors=True)
