"""The client's exceptions: one per error code of the API's envelope
(``{"data": null, "error": {"code", "message", "details"}}``), all ``FlowForgeError``."""

from __future__ import annotations

from typing import Any


class FlowForgeError(Exception):
    """An answer the API refused, or no answer at all (``status`` None).

    ``code`` is the envelope's machine-readable code (``not_found``...), ``details`` its
    details, ``request_id`` the answer's X-Request-ID (what an operator greps the logs for).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        request_id: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.details = details

    def __str__(self) -> str:
        where = f" (HTTP {self.status}, request {self.request_id})" if self.status else ""
        return f"{self.code}: {self.message}{where}"


class BadRequest(FlowForgeError):
    """400: the request itself is wrong (an unknown parameter, invalid JSON, a cursor)."""


class ValidationFailed(BadRequest):
    """400 ``validation_failed``: ``errors`` maps each field (``title``,
    ``tasks[2].payload.seconds``) to what is wrong with it."""

    @property
    def errors(self) -> dict[str, str]:
        return dict(self.details) if isinstance(self.details, dict) else {}

    def __str__(self) -> str:
        fields = "; ".join(f"{name}: {why}" for name, why in self.errors.items())
        return f"{super().__str__()}: {fields}" if fields else super().__str__()


class Unauthorized(FlowForgeError):
    """401: no token, or an unknown, revoked or expired one."""


class Forbidden(FlowForgeError):
    """403: a read token asked to write."""


class NotFound(FlowForgeError):
    """404: no such task (or route)."""


class Conflict(FlowForgeError):
    """409: the task's state refuses it (cancel a finished task, retry a pending one)."""


class IdempotencyMismatch(FlowForgeError):
    """422: the Idempotency-Key was used before with another body."""


class TooManyRequests(FlowForgeError):
    """429: a rate limit, or ``queue_full`` (API_MAX_PENDING); never retried here."""


class ServerError(FlowForgeError):
    """5xx: the API (or the edge in front of it) failed; 502/503/504 after the retries."""


class ConnectionFailed(FlowForgeError):
    """No answer: the connection failed or timed out (after the retries)."""


class WaitTimedOut(FlowForgeError, TimeoutError):
    """``Client.wait``: the task was not final in time; ``task`` is how it was last seen."""

    def __init__(self, message: str, task: Any) -> None:
        super().__init__(message, code="wait_timeout")
        self.task = task


_BY_CODE: dict[str, type[FlowForgeError]] = {
    "validation_failed": ValidationFailed,
    "idempotency_mismatch": IdempotencyMismatch,
    "queue_full": TooManyRequests,
}
_BY_STATUS: dict[int, type[FlowForgeError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: IdempotencyMismatch,
    429: TooManyRequests,
}


def error_from(status: int, body: Any, request_id: str | None, reason: str) -> FlowForgeError:
    """The exception for an error answer: by the envelope's code, else by the status (an
    edge's own page, HTML, has no envelope: its reason is the message)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"http_{status}", "message": reason or f"HTTP {status}"}
    code = str(error.get("code") or f"http_{status}")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else FlowForgeError
    return cls(
        str(error.get("message") or reason),
        code=code,
        status=status,
        request_id=request_id,
        details=error.get("details"),
    )
