"""A Python client of the FlowForge API: ``from flowforge.client import Client``.

docs/client.md is its manual. Standard library only (urllib), beside the package's own
constants, so an application installs nothing more than flowforge.
"""

from __future__ import annotations

from .client import Client
from .errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    FlowForgeError,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    WaitTimedOut,
)
from .task import Task

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "FlowForgeError",
    "Forbidden",
    "IdempotencyMismatch",
    "NotFound",
    "ServerError",
    "Task",
    "TooManyRequests",
    "Unauthorized",
    "ValidationFailed",
    "WaitTimedOut",
]
