"""TokenStore: API tokens in ``api_tokens``, with their SQL (the rules: flowforge.tokens).

Only a SHA-256 of each token is stored; the unique index on token_hash makes a lookup one
index probe. The API caches the answers briefly (flowforge.api.auth)."""

from __future__ import annotations

import psycopg
from psycopg.rows import class_row

from ..db import ConnectionSource, DatabaseUnavailable
from ..tokens import ApiToken, Grant, TokenError, check_name, check_scope, new_token, token_hash

TOKEN_SCOPE = "SELECT id, scope, revoked_at IS NULL FROM api_tokens WHERE token_hash = %(hash)s"
INSERT_TOKEN = """
INSERT INTO api_tokens (name, token_hash, scope) VALUES (%(name)s, %(hash)s, %(scope)s)
RETURNING id, name, scope, created_at, revoked_at
"""
LIST_TOKENS = "SELECT id, name, scope, created_at, revoked_at FROM api_tokens ORDER BY name"
# Revoking twice keeps the first revocation's time; the last column says it was so.
REVOKE_TOKEN = """
WITH old AS (SELECT id, revoked_at FROM api_tokens WHERE name = %(name)s FOR UPDATE)
UPDATE api_tokens t SET revoked_at = coalesce(t.revoked_at, now())
FROM old WHERE t.id = old.id
RETURNING t.id, t.name, t.scope, t.created_at, t.revoked_at, old.revoked_at IS NOT NULL
"""


class TokenStore:
    """The SQL of ``py`` for tokens, over a connection source shared with the app."""

    def __init__(self, source: ConnectionSource) -> None:
        self.source = source

    def grant_of(self, digest: bytes) -> Grant | None:
        """The grant of the valid (known, unrevoked) token whose hash is ``digest``, else
        None. Raises ``DatabaseUnavailable`` when PostgreSQL cannot be asked (tried twice:
        after a PostgreSQL restart the first, stale connection fails, the server does not)."""

        def read() -> tuple[int, str, bool] | None:
            with self.source.connection() as conn:
                return conn.execute(TOKEN_SCOPE, {"hash": digest}).fetchone()

        try:
            row = read()
        except DatabaseUnavailable:
            row = read()
        if row is None or not row[2]:
            return None
        return Grant(row[0], row[1])

    def create(self, name: str, scope: str) -> tuple[str, ApiToken]:
        """A new token called ``name``: (the token itself, its row)."""
        check_name(name)
        check_scope(scope)
        token = new_token()
        params = {"name": name, "hash": token_hash(token), "scope": scope}
        try:
            with self.source.connection() as conn:
                cur = conn.cursor(row_factory=class_row(ApiToken))
                row = cur.execute(INSERT_TOKEN, params).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            if "api_tokens_name_key" in str(exc):
                raise TokenError(
                    f"a token named {name!r} already exists (names stay taken after "
                    "revocation; pick another name)"
                ) from None
            raise  # a hash collision of 256 random bits: never in practice
        assert row is not None
        return token, row

    def list(self) -> list[ApiToken]:
        with self.source.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiToken))
            return cur.execute(LIST_TOKENS).fetchall()

    def revoke(self, name: str) -> tuple[ApiToken, bool]:
        """Revoke the token ``name``: (its row, whether it was already revoked)."""
        with self.source.connection() as conn:
            row = conn.execute(REVOKE_TOKEN, {"name": name}).fetchone()
        if row is None:
            raise TokenError(f"no token named {name[:100]!r} (see `flowforge token list`)")
        return ApiToken(*row[:5]), bool(row[5])
