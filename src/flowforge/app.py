"""The import path of the API before it became the ``flowforge.api`` package; kept
because a running API of the previous release imports it: on ``systemctl reload`` its
gunicorn arbiter (the old code) loads ``flowforge.app.create_app`` from the newly
installed package, and its error page reads the envelope from here. New code imports
``flowforge.api``."""

from __future__ import annotations

from .api.app import create_app
from .api.envelope import ERROR_CODES, REQUEST_ID_HEADER, ApiError, error_body, request_id_from
from .api.routes.service import served_spec

__all__ = [
    "ERROR_CODES",
    "REQUEST_ID_HEADER",
    "ApiError",
    "create_app",
    "error_body",
    "request_id_from",
    "served_spec",
]
