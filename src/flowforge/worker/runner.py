"""The worker process: ``run_worker`` (``flowforge worker``) runs the dispatcher
(``dispatcher.Worker``) in the main thread and takes the stop signals in a thread of its
own."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading

from ..config import Settings
from .dispatcher import Worker

log = logging.getLogger("flowforge.worker")


def run_worker(settings: Settings) -> int:
    """``flowforge worker``: run until SIGTERM or SIGINT, then drain; 0 after a clean stop."""
    # Signals are taken by a thread of their own with sigwait: a Python signal handler
    # could run while the main thread holds the wake-up Event's lock and deadlock on it.
    # The mask is set before any thread starts, so every thread inherits it.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    faulthandler.enable()  # a crash in the dispatcher leaves a traceback on stderr
    worker = Worker(settings)

    def wait_signals() -> None:
        while True:
            signum = signal.sigwait(stop_signals)
            log.info("received %s", signal.Signals(signum).name)
            worker.request_stop(signum)

    threading.Thread(target=wait_signals, name="flowforge-signals", daemon=True).start()
    try:
        return worker.run()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
