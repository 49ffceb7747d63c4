"""The HTTP API: a Bottle app built by ``create_app(settings)``.

Every response is the JSON envelope, errors included (Bottle's HTML error pages never
reach a client), and carries ``X-Request-ID``. One access line is logged per request.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import bottle
import orjson
from gunicorn.http.errors import ParseException
from sqlalchemy import Engine

from . import __version__, logs, pagination, tokens, web
from .auth import PendingGauge, TokenCache, protected
from .caching import TimedCache
from .config import Settings, address_allowed, check_api_auth
from .db import DatabaseUnavailable, make_engine
from .handlers import load_handlers
from .resources import resource_path
from .schedules import ScheduleExists, ScheduleStore, schedule_body, valid_name
from .schedules import list_query as schedule_list_query
from .store import (
    IdempotencyMismatch,
    IdempotentTaskGone,
    NewTask,
    NotFound,
    TaskStore,
    TransitionRefused,
)
from .validation import ValidationError, batch_body, list_query, task_body

log = logging.getLogger("flowforge.api")
T = TypeVar("T")

REQUEST_ID_HEADER = "X-Request-ID"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,200}$")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_BIGINT_MAX = 2**63 - 1
# How long a client told "queue full" should wait before trying again (seconds).
QUEUE_FULL_RETRY_AFTER = 5
# Numbers orjson would change: integers beyond 64 bits (they become floats) and fractions
# below a double's range (they become 0.0). Only a body with a long run of digits or a
# three-digit exponent can hold one; only such a body is read a second time to find it.
_MAYBE_INEXACT = re.compile(rb"[0-9]{19}|[eE][+-]?[0-9]{3}")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson keeps as an int
_JSON_TYPES = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, message, details."""

    def __init__(
        self, status: int, message: str, details: Any = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ERROR_CODES.get(status, "error")
        self.message = message
        self.details = details


# /v1/stats is read at most this often per process, however many dashboards poll it.
STATS_CACHE_SECONDS = 2.0


def _dumps(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_UTC_Z)


def error_body(code: str, message: str, details: Any = None) -> bytes:
    return _dumps({"data": None, "error": {"code": code, "message": message, "details": details}})


def _exact_int(token: str) -> int:
    value = int(token)
    if not _INT_MIN <= value <= _INT_MAX:
        raise ApiError(
            400,
            f"the number {token[:40]} does not fit in 64 bits; send it as a string",
            {"number": token[:100]},
            code="number_out_of_range",
        )
    return value


def _exact_float(token: str) -> float:
    value = float(token)
    if value == 0.0 and any(c in "123456789" for c in token.lower().split("e")[0]):
        raise ApiError(
            400,
            f"the number {token[:40]} is too small for a double (it would become 0); "
            "send it as a string",
            {"number": token[:100]},
            code="number_out_of_range",
        )
    return value


def check_numbers(raw: bytes) -> None:
    """Refuse a body whose numbers would not be stored as sent (see ``_MAYBE_INEXACT``):
    a 400 naming the number, rather than a payload quietly changed."""
    if _MAYBE_INEXACT.search(raw):
        # A body deeper than the recursion limit is deeper than any valid task: the
        # validation refuses it.
        with contextlib.suppress(RecursionError):
            json.loads(raw, parse_int=_exact_int, parse_float=_exact_float)


def allow_header(allowed: str) -> str:
    """Bottle's ``Allow`` list, with HEAD wherever GET is served (Bottle answers HEAD
    with the GET route)."""
    methods = {m.strip() for m in allowed.split(",") if m.strip()}
    if "GET" in methods:
        methods.add("HEAD")
    return ",".join(sorted(methods))


def request_id_from(header: str | None) -> str:
    """The client's request ID if it is sane (bounded, safe characters), else a new one."""
    if header and _SANE_REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


_SPEC_HANDLERS = b"enum: [noop, sleep]"


def served_spec(spec: bytes, known_types: frozenset[str]) -> bytes:
    """openapi.yaml as this deployment serves it: the task ``type`` enum lists the handlers
    registered here (plug-ins included), so a client's validator accepts exactly those."""
    return spec.replace(_SPEC_HANDLERS, b"enum: " + orjson.dumps(sorted(known_types)), 1)


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    keep_connection: bool = False,
    metrics: bool = True,
) -> bottle.Bottle:
    """Build the API. ``engine`` is made from ``settings`` unless given (tests share one);
    ``keep_connection`` suits a server that runs one request at a time per process;
    ``metrics=False`` counts nothing per request (the benchmark's side-by-side).
    Raises ``ConfigError`` for ``API_AUTH=off`` on an address others can reach."""
    from .metrics import QUERY_TIMEOUT_MS, QueueCollector, RequestMetrics, render

    check_api_auth(settings)
    store = TaskStore(
        engine or make_engine(settings),
        default_max_attempts=settings.task_max_attempts,
        lease_seconds=settings.worker_lease,
        default_timeout=settings.task_timeout,
        keep_connection=keep_connection,
        health_timeout=settings.database_connect_timeout,
    )
    known_types = frozenset(load_handlers())
    openapi = served_spec(resource_path("openapi.yaml").read_bytes(), known_types)
    max_body = settings.api_max_body
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False  # routes return the envelope's bytes themselves
    request_metrics = RequestMetrics.for_process()
    observe = request_metrics.observe if metrics else None
    queue_gauges = QueueCollector(lambda: store.queue_metrics(QUERY_TIMEOUT_MS))
    metrics_allow = settings.metrics_allow
    # Task ids are ASCII digits: Bottle's ``int`` filter (``\d``) also takes other
    # scripts' digits (``/v1/tasks/%D9%A3`` would be task 3).
    app.router.add_filter("id", lambda _conf: (r"[0-9]+", int, str))

    # -- per-request plumbing -------------------------------------------------------------

    @app.hook("before_request")
    def start_request() -> None:
        environ = bottle.request.environ
        rid = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["flowforge.request_id"] = rid
        environ["flowforge.started"] = time.perf_counter()

    @app.hook("after_request")
    def finish_request() -> None:
        environ = bottle.request.environ
        rid = environ.get("flowforge.request_id") or request_id_from(None)
        response = bottle.response
        response.set_header(REQUEST_ID_HEADER, rid)
        started = environ.get("flowforge.started", time.perf_counter())
        seconds = time.perf_counter() - started
        if observe is not None:
            route = environ.get("bottle.route")
            if route is None and response.status_code not in (404, 405):
                # refused before routing (401, 403, 429 in a hook): its route all the same
                with contextlib.suppress(bottle.HTTPError):
                    route = app.router.match(environ)[0]
            observe(
                environ["REQUEST_METHOD"],
                route.rule if route is not None else None,
                response.status_code,
                seconds,
            )
        log.info(
            "%s %s %s",
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            response.status_code,
            extra={
                "request_id": rid,
                "method": environ["REQUEST_METHOD"],
                "path": environ.get("PATH_INFO", ""),
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR"),
            },
        )

    # -- bearer tokens (flowforge.auth) ----------------------------------------------------

    token_store = tokens.TokenStore(store.source)
    token_cache = TokenCache(token_store.grant_of)

    def refuse(status: int, code: str, message: str, challenge: str | None = None) -> NoReturn:
        headers = {"Content-Type": "application/json"}
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        raise bottle.HTTPResponse(error_body(code, message), status, headers)

    def check_token() -> None:
        environ = bottle.request.environ
        if not protected(environ.get("PATH_INFO", "")):
            return
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            refuse(
                401,
                "unauthorized",
                "this route needs a token: send 'Authorization: Bearer <token>' "
                "(an operator makes one with `flowforge token create`)",
                'Bearer realm="flowforge"',
            )
        token = token.strip()
        try:
            grant = token_cache.grant(token)
        except DatabaseUnavailable as exc:
            log.error("database unavailable: %s", exc)
            refuse(503, "service_unavailable", "the database is unavailable")
        if grant is None:
            refuse(
                401,
                "unauthorized",
                "the bearer token is unknown or revoked",
                'Bearer realm="flowforge", error="invalid_token"',
            )
        method = environ["REQUEST_METHOD"]
        if not tokens.allows(grant.scope, method):
            refuse(
                403,
                "forbidden",
                f"a {grant.scope} token cannot {method}: this needs a write token",
                'Bearer realm="flowforge", error="insufficient_scope", scope="write"',
            )
        # Who asked, for routes that keep something per token (idempotency keys). Without
        # a check (API_AUTH=off) neither is set: read them with .get(..., 0 / "write").
        environ["flowforge.token_id"] = grant.id
        environ["flowforge.token_scope"] = grant.scope

    if settings.api_auth == "token":
        app.hook("before_request")(check_token)

    def api_plugin(callback: Callable[..., Any]) -> Callable[..., Any]:
        """Runs a route: its result as the envelope, its exceptions as error envelopes."""

        def wrapper(*args: Any, **kwargs: Any) -> bytes:
            response = bottle.response
            response.content_type = "application/json"
            rid = bottle.request.environ["flowforge.request_id"]
            try:
                with logs.bind(request_id=rid):
                    return callback(*args, **kwargs)
            except ApiError as exc:
                response.status = exc.status
                return error_body(exc.code, exc.message, exc.details)
            except ValidationError as exc:
                response.status = 400
                return error_body("validation_failed", str(exc), exc.details)
            except IdempotencyMismatch:
                response.status = 422
                return error_body(
                    "idempotency_mismatch",
                    "this Idempotency-Key was first used with a different body",
                    {"header": IDEMPOTENCY_HEADER},
                )
            except IdempotentTaskGone as exc:
                response.status = 409
                return error_body(
                    "conflict",
                    f"the task this Idempotency-Key created ({exc.args[0]}) has been deleted",
                    {"task_id": exc.args[0]},
                )
            except ScheduleExists as exc:
                response.status = 409
                return error_body(
                    "conflict", f"a schedule named {exc.args[0]!r} exists", {"name": exc.args[0]}
                )
            except NotFound as exc:
                response.status = 404
                return error_body("not_found", f"task {exc.args[0]} not found")
            except TransitionRefused as exc:
                response.status = 409
                details = {"status": exc.current, "requested": exc.wanted}
                return error_body("conflict", str(exc), details)
            except DatabaseUnavailable as exc:
                log.error("database unavailable: %s", exc, extra={"request_id": rid})
                response.status = 503
                return error_body("service_unavailable", "the database is unavailable")
            except bottle.HTTPResponse:
                raise
            except Exception:
                log.exception("unhandled error", extra={"request_id": rid})
                response.status = 500
                return error_body(
                    "internal_error",
                    f"internal server error (request ID {rid})",
                    {"request_id": rid},
                )

        return wrapper

    app.install(api_plugin)

    def error_page(error: bottle.HTTPError) -> bytes:
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

    app.default_error_handler = error_page

    # -- helpers ------------------------------------------------------------------------

    def read_json(validate: Callable[[Any], T]) -> T:
        """The body, parsed and passed through ``validate``; then its numbers are checked
        (``check_numbers``), so a field's own rule (an integer, a range) speaks first."""
        request = bottle.request
        content_type = request.environ.get("CONTENT_TYPE", "")
        if not _JSON_TYPES.match(content_type):
            raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
        declared = request.environ.get("CONTENT_LENGTH") or ""
        if declared and not (declared.isascii() and declared.isdigit()):
            raise ApiError(400, f"Content-Length is not a number of bytes: {declared[:40]!r}")
        length = int(declared) if declared else -1
        if length > max_body:
            raise ApiError(413, f"the body is larger than {max_body} bytes")
        stream = request.environ["wsgi.input"]
        chunked = "chunked" in request.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length < 0 and not chunked:
            raise ApiError(411, "a Content-Length header is required")
        try:
            # gunicorn de-chunks while the body is read: a broken chunk size or a client
            # that stops mid-chunk surfaces here, as gunicorn's parse error or NoMoreData.
            raw = stream.read(length if length >= 0 else max_body + 1)
        except (ParseException, OSError, ValueError) as exc:
            reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            raise ApiError(400, f"the body could not be read ({reason[:200]})") from None
        if len(raw) > max_body:
            raise ApiError(413, f"the body is larger than {max_body} bytes")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
        clean = validate(body)
        check_numbers(raw)
        return clean

    def ok(data: Any, status: int = 200, meta: dict[str, Any] | None = None) -> bytes:
        bottle.response.status = status
        body: dict[str, Any] = {"data": data, "error": None}
        if meta is not None:
            body["meta"] = meta
        return _dumps(body)

    def query_params() -> dict[str, str | None]:
        """The query string, each parameter once: a repeated one is a 400 (which of two
        values would count is a guess a client should not have to make)."""
        query = bottle.request.query
        repeated = sorted(name for name in query if len(query.getall(name)) > 1)
        if repeated:
            raise ValidationError(
                "a query parameter is repeated",
                {name: "must be given at most once" for name in repeated},
            )
        return {name: query.getunicode(name) for name in query}

    def check_id(task_id: int) -> int:
        if not 1 <= task_id <= _BIGINT_MAX:
            raise ApiError(404, f"task {task_id} not found")
        return task_id

    # -- routes -------------------------------------------------------------------------

    @app.get("/health")
    def health() -> bytes:
        try:
            store.ping()
        except DatabaseUnavailable as exc:
            log.warning("health check: database unreachable: %s", exc)
            bottle.response.status = 503
            return error_body(
                "service_unavailable", "the database is unreachable", {"database": "unreachable"}
            )
        return ok({"status": "ok", "database": "ok", "version": __version__})

    @app.get("/metrics", skip=True)
    def metrics_page() -> bytes:
        """Prometheus text format, for loopback and METRICS_ALLOW only (a 403 envelope
        otherwise). Behind a proxy on this host every client is loopback: the proxy's own
        allow-list decides there."""
        response = bottle.response
        environ = bottle.request.environ
        if not address_allowed(environ.get("REMOTE_ADDR"), metrics_allow):
            response.status = 403
            response.content_type = "application/json"
            return error_body("forbidden", "this address may not read /metrics (METRICS_ALLOW)")
        body, content_type = render(
            request_metrics.registry, queue_gauges, environ.get("HTTP_ACCEPT")
        )
        response.content_type = content_type
        return body

    @app.get("/openapi.yaml", skip=True)
    def openapi_spec() -> bytes:
        bottle.response.content_type = "application/yaml"
        return openapi

    def list_tasks() -> bytes:
        q = list_query(query_params())
        filters = {"status": q.status, "type": q.type, "queue": q.queue}
        after = (q.cursor.created_at, q.cursor.id) if q.cursor else None
        result = store.list(
            limit=q.limit,
            offset=(q.page - 1) * q.limit,
            filters=filters,
            after=after,
            fields=q.fields,
        )
        next_cursor = None
        if result.next_key is not None:
            next_cursor = pagination.encode(pagination.Cursor(*result.next_key, q.filters))
        meta = {
            "page": None if q.cursor else q.page,
            "limit": q.limit,
            "total": result.total,
            "total_exact": result.total_exact,
            "next_cursor": next_cursor,
        }
        return ok(result.tasks, meta=meta)

    pending = (
        PendingGauge(store.count_pending_upto, settings.api_max_pending)
        if settings.api_max_pending
        else None
    )

    def admit(n: int = 1) -> None:
        """API_MAX_PENDING: refuse new tasks while the queue holds more than that."""
        if pending is None:
            return
        if pending.full():
            bottle.response.set_header("Retry-After", str(QUEUE_FULL_RETRY_AFTER))
            raise ApiError(
                429,
                f"the queue is full (more than {pending.limit} pending tasks); "
                f"retry in {QUEUE_FULL_RETRY_AFTER} seconds",
                {"max_pending": pending.limit},
                code="queue_full",
            )
        pending.added(n)

    def idempotency_key() -> str | None:
        # WSGI hands headers over as latin-1 text: a non-ASCII byte fails the pattern too.
        key = bottle.request.environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.match(key):
            raise ValidationError(
                "the Idempotency-Key header is not valid",
                {IDEMPOTENCY_HEADER: "must be 1-200 printable ASCII characters"},
            )
        return key

    def create_task() -> bytes:
        body, fields = read_json(
            lambda body: (body, task_body(body, partial=False, known_types=known_types))
        )
        key = idempotency_key()
        rid = bottle.request.environ["flowforge.request_id"]
        admit()
        if key is None:
            task = store.create(NewTask(**fields), request_id=rid)
            replayed = False
        else:
            digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
            task, replayed = store.create_once(
                NewTask(**fields),
                request_id=rid,
                token_id=bottle.request.environ.get("flowforge.token_id") or 0,
                key=key,
                request_hash=digest,
            )
        bottle.response.set_header("Location", f"/v1/tasks/{task.id}")
        if replayed:
            log.info("task creation replayed (Idempotency-Key)", extra={"task_id": task.id})
            bottle.response.set_header("Idempotent-Replayed", "true")
            return ok(task, status=200)
        log.info("task created", extra={"task_id": task.id, "type": task.type})
        return ok(task, status=201)

    def create_batch() -> bytes:
        items = read_json(lambda body: batch_body(body, known_types=known_types))
        admit(len(items))
        rid = bottle.request.environ["flowforge.request_id"]
        tasks = store.create_many([NewTask(**fields) for fields in items], request_id=rid)
        log.info(
            "tasks created in a batch",
            extra={"count": len(tasks), "first_task_id": tasks[0].id, "last_task_id": tasks[-1].id},
        )
        return ok(tasks, status=201)

    def get_task(task_id: int) -> bytes:
        task = store.get(check_id(task_id))
        if task is None:
            raise ApiError(404, f"task {task_id} not found")
        return ok(task)

    def update_task(task_id: int) -> bytes:
        changes = read_json(lambda body: task_body(body, partial=True, known_types=known_types))
        task = store.update(check_id(task_id), changes)
        if task is None:
            raise ApiError(404, f"task {task_id} not found")
        return ok(task)

    def delete_task(task_id: int) -> bytes:
        store.delete(check_id(task_id))
        bottle.response.status = 204
        return b""

    def cancel_task(task_id: int) -> bytes:
        outcome = store.cancel(check_id(task_id))
        if outcome.immediate:
            log.info("task cancelled", extra={"task_id": task_id})
            return ok(outcome.task)
        log.info("task cancel requested: its worker was told", extra={"task_id": task_id})
        return ok(outcome.task, status=202)

    def retry_task(task_id: int) -> bytes:
        task = store.retry(check_id(task_id))
        log.info("task retried: pending again, attempts 0", extra={"task_id": task_id})
        return ok(task)

    # -- schedules ----------------------------------------------------------------------

    schedules = ScheduleStore(
        store.source,
        default_max_attempts=settings.task_max_attempts,
        default_timeout=settings.task_timeout,
    )

    def schedule_or_404(name: str):  # type: ignore[no-untyped-def]
        found = schedules.get(name) if valid_name(name) else None
        if found is None:
            raise ApiError(404, f"schedule {name!r} not found")
        return found

    def list_schedules() -> bytes:
        page, limit = schedule_list_query(query_params())
        rows, total = schedules.list(limit=limit, offset=(page - 1) * limit)
        return ok(rows, meta={"page": page, "limit": limit, "total": total})

    def create_schedule() -> bytes:
        fields = read_json(lambda body: schedule_body(body, partial=False, known_types=known_types))
        created = schedules.create(fields)
        log.info("schedule created", extra={"schedule": created.name, "cron": created.cron})
        bottle.response.set_header("Location", f"/v1/schedules/{created.name}")
        return ok(created, status=201)

    def get_schedule(name: str) -> bytes:
        return ok(schedule_or_404(name))

    def update_schedule(name: str) -> bytes:
        changes = read_json(lambda body: schedule_body(body, partial=True, known_types=known_types))
        if changes.get("name", name) != name:
            raise ValidationError(
                "the schedule is not valid", {"name": "cannot change (it names the schedule)"}
            )
        updated = schedules.update(name, changes) if valid_name(name) else None
        if updated is None:
            raise ApiError(404, f"schedule {name!r} not found")
        log.info("schedule changed", extra={"schedule": name})
        return ok(updated)

    def delete_schedule(name: str) -> bytes:
        if not (valid_name(name) and schedules.delete(name)):
            raise ApiError(404, f"schedule {name!r} not found")
        log.info("schedule deleted", extra={"schedule": name})
        bottle.response.status = 204
        return b""

    app.route("/v1/schedules", "GET", list_schedules)
    app.route("/v1/schedules", "POST", create_schedule)
    app.route("/v1/schedules/<name>", "GET", get_schedule)
    app.route("/v1/schedules/<name>", "PUT", update_schedule)
    app.route("/v1/schedules/<name>", "DELETE", delete_schedule)

    stats_cache = TimedCache(lambda: store.stats(QUERY_TIMEOUT_MS), ttl=STATS_CACHE_SECONDS)

    @app.get("/v1/stats")
    def stats() -> bytes:
        """The dashboard's numbers (read scope), cached a couple of seconds per process so
        any number of open dashboards cost the database the same."""
        return ok(stats_cache.get())

    web.add_routes(app)

    for prefix in ("/v1", ""):
        app.route(f"{prefix}/tasks", "GET", list_tasks)
        app.route(f"{prefix}/tasks", "POST", create_task)
        app.route(f"{prefix}/tasks/batch", "POST", create_batch)
        app.route(f"{prefix}/tasks/<task_id:id>", "GET", get_task)
        app.route(f"{prefix}/tasks/<task_id:id>", "PUT", update_task)
        app.route(f"{prefix}/tasks/<task_id:id>", "DELETE", delete_task)
        app.route(f"{prefix}/tasks/<task_id:id>/cancel", "POST", cancel_task)
        app.route(f"{prefix}/tasks/<task_id:id>/retry", "POST", retry_task)

    app.config["flowforge.store"] = store
    app.config["flowforge.tokens"] = token_cache
    app.config["flowforge.admit"] = admit  # for routes that create tasks (a batch, say)
    return app
