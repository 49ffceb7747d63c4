"""``EnvelopePlugin``: the per-request plumbing of the API, as one Bottle plugin.

Installed on the app (``app.install(EnvelopePlugin(...))``), it

- gives every request its ID (the client's sane ``X-Request-ID``, else a new one) and
  sends it back on every response, errors included;
- runs each route inside ``logs.bind(request_id=...)`` and turns what the route returns
  into the answer, and what it raises into the error envelope (``error_answer``: the one
  table of exceptions to statuses and codes);
- answers Bottle's own errors (no route, wrong method, a failing hook) in the envelope;
- logs one access line per request and counts it in the request metrics.

Routes installed with ``skip=True`` (``/metrics``, ``/openapi.yaml``) bypass the route
wrapper, not the request ID, the access line or the metrics.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import bottle

from .. import logs
from ..db import DatabaseUnavailable
from ..domain.validation import ValidationError
from ..stores.schedules import ScheduleExists
from ..stores.task_types import (
    IdempotencyMismatch,
    IdempotentTaskGone,
    NotFound,
    TransitionRefused,
)
from .envelope import (
    ERROR_CODES,
    IDEMPOTENCY_HEADER,
    REQUEST_ID_HEADER,
    ApiError,
    allow_header,
    error_body,
    request_id_from,
)

log = logging.getLogger("flowforge.api")

# (status, code, message, details) of an error a route raised.
Answer = tuple[int, str, str, Any]


def error_answer(exc: Exception, rid: str) -> Answer | None:
    """The error envelope for what a route raised; None: not an error of ours (a 500)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, exc.message, exc.details
    if isinstance(exc, ValidationError):
        return 400, "validation_failed", str(exc), exc.details
    if isinstance(exc, IdempotencyMismatch):
        return (
            422,
            "idempotency_mismatch",
            "this Idempotency-Key was first used with a different body",
            {"header": IDEMPOTENCY_HEADER},
        )
    if isinstance(exc, IdempotentTaskGone):
        task_id = exc.args[0]
        return (
            409,
            "conflict",
            f"the task this Idempotency-Key created ({task_id}) has been deleted",
            {"task_id": task_id},
        )
    if isinstance(exc, ScheduleExists):
        name = exc.args[0]
        return 409, "conflict", f"a schedule named {name!r} exists", {"name": name}
    if isinstance(exc, NotFound):
        return 404, "not_found", f"task {exc.args[0]} not found", None
    if isinstance(exc, TransitionRefused):
        return 409, "conflict", str(exc), {"status": exc.current, "requested": exc.wanted}
    if isinstance(exc, DatabaseUnavailable):
        log.error("database unavailable: %s", exc, extra={"request_id": rid})
        return 503, "service_unavailable", "the database is unavailable", None
    return None


Observe = Callable[[str, str | None, int, float], None]


class EnvelopePlugin:
    """See the module's docstring. ``observe(method, rule, status, seconds)`` counts a
    request in the metrics (None: nothing is counted)."""

    name = "flowforge_envelope"
    api = 2

    def __init__(self, observe: Observe | None = None) -> None:
        self.observe = observe
        self.app: bottle.Bottle | None = None

    # -- Bottle's plugin interface ----------------------------------------------------------

    def setup(self, app: bottle.Bottle) -> None:
        self.app = app
        app.add_hook("before_request", self.start_request)
        app.add_hook("after_request", self.finish_request)
        app.default_error_handler = self.error_page

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        """Runs a route: its result as the answer, its exceptions as error envelopes."""

        def wrapper(*args: Any, **kwargs: Any) -> bytes:
            response = bottle.response
            response.content_type = "application/json"
            rid = bottle.request.environ["flowforge.request_id"]
            try:
                with logs.bind(request_id=rid):
                    return callback(*args, **kwargs)
            except bottle.HTTPResponse:
                raise
            except Exception as exc:
                answer = error_answer(exc, rid)
                if answer is None:
                    log.exception("unhandled error", extra={"request_id": rid})
                    answer = (
                        500,
                        "internal_error",
                        f"internal server error (request ID {rid})",
                        {"request_id": rid},
                    )
                status, code, message, details = answer
                response.status = status
                return error_body(code, message, details)

        return wrapper

    # -- hooks --------------------------------------------------------------------------------

    def start_request(self) -> None:
        environ = bottle.request.environ
        environ["flowforge.request_id"] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["flowforge.started"] = time.perf_counter()

    def finish_request(self) -> None:
        environ = bottle.request.environ
        rid = environ.get("flowforge.request_id") or request_id_from(None)
        response = bottle.response
        response.set_header(REQUEST_ID_HEADER, rid)
        started = environ.get("flowforge.started", time.perf_counter())
        seconds = time.perf_counter() - started
        if self.observe is not None:
            route = environ.get("bottle.route")
            if route is None and response.status_code not in (404, 405):
                # refused before routing (401, 403, 429 in a hook): its route all the same
                with contextlib.suppress(bottle.HTTPError):
                    route = self.app.router.match(environ)[0]  # type: ignore[union-attr]
            self.observe(
                environ["REQUEST_METHOD"],
                route.rule if route is not None else None,
                response.status_code,
                seconds,
            )
        method, path, status = (
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            response.status_code,
        )
        logs.log_fields(
            log,
            logging.INFO,
            f"{method} {path} {status}",
            {
                "request_id": rid,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR"),
            },
        )

    def error_page(self, error: bottle.HTTPError) -> bytes:
        """Errors Bottle raises itself (no route, wrong method, ...), as the envelope."""
        bottle.response.content_type = "application/json"
        environ = bottle.request.environ
        # A failure before or after the route (a hook) skips finish_request: the ID here.
        rid = environ.get("flowforge.request_id") or request_id_from(
            environ.get("HTTP_X_REQUEST_ID")
        )
        environ["flowforge.request_id"] = rid
        bottle.response.set_header(REQUEST_ID_HEADER, rid)
        status = error.status_code
        if status == 404:
            message = f"no route for {bottle.request.path}"
        elif status == 405:
            message = f"{bottle.request.method} is not allowed here"
        elif status == 500:
            log.error("unhandled error: %s", error.exception, extra={"request_id": rid})
            message = f"internal server error (request ID {rid})"
        else:
            message = str(error.body or bottle.HTTP_CODES.get(status, "error"))
        details = None
        if status == 405:
            allowed = allow_header(error.get_header("Allow") or "")
            error.set_header("Allow", allowed)
            details = {"allow": allowed}
        return error_body(ERROR_CODES.get(status, "error"), message, details)
