"""One HTTP exchange with the API over the standard library (urllib: the client adds no
dependency), with retries: network errors and 502/503/504, with a growing backoff."""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import __version__
from ..api.envelope import REQUEST_ID_HEADER
from .errors import ConnectionFailed, FlowForgeError, error_from

DEFAULT_TIMEOUT = 10.0  # seconds per HTTP request
DEFAULT_RETRIES = 3  # after the first attempt
DEFAULT_BACKOFF = 0.2  # seconds before the first retry, doubled each time...
BACKOFF_MAX = 5.0  # ...up to this
# An edge's "the API did not answer" and the API's "not now" (its database is away).
RETRY_STATUSES = frozenset({502, 503, 504})


class _Retry(Exception):
    """A failure worth another attempt; ``sent``: the request may have been acted on."""

    def __init__(self, error: FlowForgeError, sent: bool) -> None:
        self.error = error
        self.sent = sent


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # the API takes RFC 3339 with a zone only
            raise ValueError(f"{value!r} has no time zone")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # an edge's HTML page: the status speaks for it


class Transport:
    def __init__(
        self, url: str, token: str, *, timeout: float, retries: int, backoff: float
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": f"flowforge-client/{__version__}",
        }
        self._opener = urllib.request.build_opener()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        replayable: bool,
    ) -> Answer:
        """The answer, or the error it is (FlowForgeError). A failure is retried when the
        request never reached the API, or when sending it again is harmless
        (``replayable``: reads, and creates under an Idempotency-Key)."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body, default=_encode).encode()
        sent_headers = {**self.headers, **(headers or {})}
        if data is not None:
            sent_headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            try:
                return self._once(urllib.request.Request(url, data, sent_headers, method=method))
            except _Retry as failure:
                if attempt == self.retries or (failure.sent and not replayable):
                    raise failure.error from None
            time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, attempt: int) -> float:
        delay = min(self.backoff * 2**attempt, BACKOFF_MAX)
        return random.uniform(delay / 2, delay)  # jitter: many clients do not retry in step

    def _once(self, req: urllib.request.Request) -> Answer:
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return Answer(resp.status, _json(resp.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                body = _json(exc.read())
            error = error_from(exc.code, body, exc.headers.get(REQUEST_ID_HEADER), exc.reason)
            if exc.code in RETRY_STATUSES:
                raise _Retry(error, sent=True) from None
            raise error from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            # Refused, or no such host: the request never left, so it is always safe again.
            sent = not isinstance(reason, ConnectionRefusedError | socket.gaierror)
            error = ConnectionFailed(f"{req.full_url}: {reason}", code="connection_failed")
            raise _Retry(error, sent=sent) from None
