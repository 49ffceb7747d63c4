"""API tokens: made here, shown once, stored only as a SHA-256 hash (``api_tokens``).

A token is ``ff_`` followed by 32 random bytes in URL-safe base64 (43 characters): the
prefix makes a leaked token easy to recognise (secret scanners, logs), the 256 random bits
make a plain SHA-256 safe to store. A hash of a high-entropy secret cannot be brute-forced,
so it needs no salt and no slow KDF, which would cost every uncached request milliseconds
of CPU.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

PREFIX = "ff_"
TOKEN_BYTES = 32
SCOPES = ("read", "write")
NAME_MAX = 100
# Names are labels an operator types and greps: letters, digits and . _ @ : - (no blanks,
# nothing a terminal or a log line would render strangely).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
# What a token may look like on the wire: longer or stranger is refused without a lookup.
TOKEN_MAX = 200
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")

# The methods a read token may use; every other one (POST, PUT, DELETE, PATCH, task
# actions) needs a write token.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: its row id (``api_tokens.id``) and scope."""

    id: int
    scope: str


class TokenError(Exception):
    """A token operation refused (bad name or scope, duplicate, unknown); one line."""


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One row of ``api_tokens`` without its hash: what ``flowforge token list`` shows."""

    id: int
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None


def new_token() -> str:
    """A fresh random token (shown once, never stored)."""
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What the database keeps: SHA-256 of the token's UTF-8 bytes (32 bytes)."""
    return hashlib.sha256(token.encode()).digest()


def plausible(token: str) -> bool:
    """Could this be a token at all? (bounded length, token68 characters)."""
    return 0 < len(token) <= TOKEN_MAX and _TOKEN_CHARS.fullmatch(token) is not None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):  # `$` alone takes a final newline
        raise TokenError(
            f"bad token name {name[:40]!r}: 1 to {NAME_MAX} characters, letters, digits "
            "and . _ @ : - (starting with a letter or digit)"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise TokenError(f"bad scope {scope[:40]!r}: expected one of {', '.join(SCOPES)}")
    return scope


def allows(scope: str, method: str) -> bool:
    """May a token of ``scope`` make a request with ``method``?"""
    return scope == "write" or method in READ_METHODS
