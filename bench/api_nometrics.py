#!/usr/bin/env python3
"""`flowforge api` exactly as deployed (same gunicorn settings) but with the per-request
metrics off: bench_api.py runs it beside the real one to measure what counting costs."""

from __future__ import annotations

from typing import Any

from flowforge.api import create_app
from flowforge.api.server import ApiServer
from flowforge.config import load_settings
from flowforge.logs import configure_logging


class NoMetricsServer(ApiServer):
    def load(self) -> Any:
        return create_app(self.settings, keep_connection=True, metrics=False)


if __name__ == "__main__":
    settings = load_settings()
    configure_logging("api", settings.log_level, log_format=settings.log_format)
    NoMetricsServer(settings).run()
