"""Bearer tokens in the API: which requests need one, the hook that checks them
(``TokenCheck``), and a per-process cache of lookups.

Every ``/v1/...`` and ``/tasks...`` request needs ``Authorization: Bearer <token>``; a
``read`` token may only GET (HEAD, OPTIONS), a ``write`` token anything. ``/health``,
``/openapi.yaml``, the docs and the other open pages are not under those prefixes.

The cache is what keeps a token from costing a database round trip per request, bounded
by the promise that a revoked token is refused by every API process within 5 seconds:

- a valid token is trusted for ``ttl`` (4 s) after the database said so; then it is looked
  up again, so a revocation is seen at most 4 s (plus one request) later;
- an unknown or revoked token is remembered as refused for ``negative_ttl`` (30 s), so a
  client retrying a bad token does not cost a query per request. This cannot delay a new
  token: a token is 256 random bits made at ``flowforge token create``, so no request can
  have carried it (and been refused) before it existed; and a revoked one never comes back;
- when the database cannot be asked, a token verified less than ``stale_grace`` ago is
  still taken (the request then meets the same outage in its route and gets 503, or 400
  for bad input, as without tokens); with no such entry the answer is 503.

The cache is keyed by the token itself: a hit costs one dict lookup (hashing it with
SHA-256 first took 3 us of the 10 us a check cost on a loaded machine, about 1 % of a GET
by id). So a token stays in the process's memory until its entry is dropped; that memory
holds the database password anyway. Only a miss hashes the token and asks the database.
It holds at most ``max_entries``; random garbage tokens cannot grow it without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

import bottle

from .. import tokens
from ..db import DatabaseUnavailable
from ..tokens import Grant, plausible, token_hash
from .envelope import error_body

log = logging.getLogger("flowforge.api")

PROTECTED_PREFIXES = ("/v1/", "/tasks")


def protected(path: str) -> bool:
    """Does a request for ``path`` need a token?"""
    return path.startswith(PROTECTED_PREFIXES) or path == "/v1"


class TokenCache:
    """Token -> grant (``None``: refused), from ``lookup(hash)`` and remembered briefly."""

    def __init__(
        self,
        lookup: Callable[[bytes], Grant | None],
        *,
        ttl: float = 4.0,
        negative_ttl: float = 30.0,
        stale_grace: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_grace = stale_grace
        self.max_entries = max_entries
        self.clock = clock
        # token -> (grant or None, valid until)
        self._entries: dict[str, tuple[Grant | None, float]] = {}

    def grant(self, token: str) -> Grant | None:
        """The token's grant (id, scope), or None for an unknown or revoked token.

        Raises ``DatabaseUnavailable`` if the database is needed and cannot answer."""
        now = self.clock()
        entry = self._entries.get(token)
        if entry is not None and now < entry[1]:
            return entry[0]
        if not plausible(token):  # not worth a query (nor a cache entry)
            return None
        try:
            grant = self.lookup(token_hash(token))
        except DatabaseUnavailable:
            if entry is not None and entry[0] is not None and now < entry[1] + self.stale_grace:
                return entry[0]
            raise
        if len(self._entries) >= self.max_entries:
            self._prune(now)
        self._entries[token] = (grant, now + (self.ttl if grant is not None else self.negative_ttl))
        return grant

    def _prune(self, now: float) -> None:
        """Drop what has expired; if that is not enough (a flood of distinct bad tokens),
        drop the refusals too, then everything: a dropped entry only costs a lookup."""
        entries = self._entries
        for key in [k for k, (_, until) in entries.items() if until + self.stale_grace <= now]:
            del entries[key]
        if len(entries) >= self.max_entries:
            for key in [k for k, (grant, _) in entries.items() if grant is None]:
                del entries[key]
        if len(entries) >= self.max_entries:
            entries.clear()


def refuse(status: int, code: str, message: str, challenge: str | None = None) -> NoReturn:
    """Answer at once, from a hook (before any route runs), in the envelope."""
    headers = {"Content-Type": "application/json"}
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    raise bottle.HTTPResponse(error_body(code, message), status, headers)


class TokenCheck:
    """The ``before_request`` hook of ``API_AUTH=token``: a protected request needs a
    bearer token (401 without a known one) whose scope allows its method (403)."""

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache

    def __call__(self) -> None:
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
        if not token:
            # `Bearer $API_TOKEN` with the variable unset: say so, not "unknown or revoked".
            refuse(
                401,
                "unauthorized",
                "no token was given: 'Authorization: Bearer' has nothing after it (an empty "
                "$API_TOKEN?); send 'Authorization: Bearer <token>' (make dev prints one, "
                "an operator makes one with `flowforge token create`)",
                'Bearer realm="flowforge", error="invalid_token"',
            )
        try:
            grant = self.cache.grant(token)
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
