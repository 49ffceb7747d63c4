"""What a request brings, read and checked before a route uses it: the JSON body (size,
media type, chunking, numbers), the query string (each parameter once), the
``Idempotency-Key`` header and task ids. Errors are raised as ``ApiError`` or
``ValidationError``; the plugin answers them."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import bottle
import orjson
from gunicorn.http.errors import ParseException

from ..domain.validation import ValidationError
from .envelope import IDEMPOTENCY_HEADER, ApiError

T = TypeVar("T")

BIGINT_MAX = 2**63 - 1
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,200}$")
_JSON_TYPES = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
# Numbers orjson would change: integers beyond 64 bits (they become floats) and fractions
# below a double's range (they become 0.0). Only a body with a long run of digits or a
# three-digit exponent can hold one; only such a body is read a second time to find it.
_MAYBE_INEXACT = re.compile(rb"[0-9]{19}|[eE][+-]?[0-9]{3}")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson keeps as an int
EMPTY_BODY = "the body is empty: send a JSON document (Content-Type: application/json)"


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


def read_json(validate: Callable[[Any], T], max_body: int) -> T:
    """The body, parsed and passed through ``validate``; then its numbers are checked
    (``check_numbers``), so a field's own rule (an integer, a range) speaks first."""
    environ = bottle.request.environ
    content_type = environ.get("CONTENT_TYPE", "")
    if not _JSON_TYPES.match(content_type):
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared and not (declared.isascii() and declared.isdigit()):
        raise ApiError(400, f"Content-Length is not a number of bytes: {declared[:40]!r}")
    length = int(declared) if declared else -1
    if length > max_body:
        raise ApiError(413, f"the body is larger than {max_body} bytes")
    stream = environ["wsgi.input"]
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    # HTTP/1.1 (RFC 9112 6.3): a request with neither Content-Length nor chunking has no
    # body, and gunicorn reads it so; "a length is required" would send the client after
    # the wrong thing. Content-Length: 0 and an empty chunked body are the same case.
    if length == 0 or (length < 0 and not chunked):
        raise ApiError(400, EMPTY_BODY, code="invalid_json")
    try:
        # gunicorn de-chunks while the body is read: a broken chunk size or a client
        # that stops mid-chunk surfaces here, as gunicorn's parse error or NoMoreData;
        # one that stops sending as the server's RequestTimeout (408), a chunk larger
        # than max_body as its ChunkTooLarge (413): ParseExceptions with a status.
        raw = stream.read(length if length >= 0 else max_body + 1)
    except (ParseException, OSError, ValueError) as exc:
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            raise ApiError(status, str(exc)) from None
        reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        raise ApiError(400, f"the body could not be read ({reason[:200]})") from None
    if len(raw) < length:
        # gunicorn hands over what came before the client closed its side: a body cut
        # short, never to be taken for the whole one.
        raise ApiError(
            400, f"the body ended after {len(raw)} of the {length} bytes of its Content-Length"
        )
    if len(raw) > max_body:
        raise ApiError(413, f"the body is larger than {max_body} bytes")
    if not raw:
        raise ApiError(400, EMPTY_BODY, code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    clean = validate(body)
    check_numbers(raw)
    return clean


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


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header (1..200 printable ASCII), None when not sent."""
    # WSGI hands headers over as latin-1 text: a non-ASCII byte fails the pattern too.
    key = bottle.request.environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):  # `$` alone takes a final newline
        raise ValidationError(
            "the Idempotency-Key header is not valid",
            {IDEMPOTENCY_HEADER: "must be 1-200 printable ASCII characters"},
        )
    return key


def check_id(task_id: int) -> int:
    """A task id the table can hold (a bigint), else a 404 like any unknown id."""
    if not 1 <= task_id <= BIGINT_MAX:
        raise ApiError(404, f"task {task_id} not found")
    return task_id
