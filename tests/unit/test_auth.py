"""Bearer tokens without a database: their shape and names, scopes, which paths need
one, the per-process cache (a fake clock), the pending gauge, API_AUTH=off on a reachable
address, and the CLI when the database cannot be reached."""

from __future__ import annotations

import re
import subprocess

import pytest

from flowforge import tokens
from flowforge.api import create_app
from flowforge.api.admission import PendingGauge
from flowforge.api.auth import TokenCache, protected
from flowforge.config import ConfigError, check_api_auth, is_loopback
from flowforge.db import DatabaseUnavailable

from ..support import (
    FLOWFORGE,
    make_settings,
    token_cli,
)

TOKEN_SHAPE = re.compile(r"^ff_[A-Za-z0-9_-]{43}$")  # 32 random bytes, URL-safe base64


WRITE = tokens.Grant(7, "write")
READ = tokens.Grant(8, "read")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- units: tokens, the cache, the gauge, the loopback rule ------------------------------


def test_tokens_are_random_prefixed_and_stored_as_sha256() -> None:
    made = {tokens.new_token() for _ in range(100)}
    assert len(made) == 100
    assert all(TOKEN_SHAPE.match(t) for t in made)
    token = made.pop()
    digest = tokens.token_hash(token)
    assert len(digest) == 32 and digest == tokens.token_hash(token)
    assert digest != tokens.token_hash(token + "x")
    assert tokens.plausible(token)
    assert not tokens.plausible("") and not tokens.plausible("a" * 201)
    assert not tokens.plausible("two words") and not tokens.plausible("ünïcode")


@pytest.mark.parametrize("name", ["deploy", "ci.bot-1", "ops@host:check", "a" * 100])
def test_good_names(name: str) -> None:
    assert tokens.check_name(name) == name


@pytest.mark.parametrize("name", ["", " ", "has space", "-dash-first", "a" * 101, "tab\t", "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(tokens.TokenError, match="bad token name"):
        tokens.check_name(name)


def test_scopes() -> None:
    assert tokens.check_scope("read") == "read"
    with pytest.raises(tokens.TokenError, match="bad scope 'admin'"):
        tokens.check_scope("admin")
    assert all(tokens.allows("read", m) for m in ("GET", "HEAD", "OPTIONS"))
    assert not any(tokens.allows("read", m) for m in ("POST", "PUT", "DELETE", "PATCH"))
    assert all(tokens.allows("write", m) for m in ("GET", "POST", "PUT", "DELETE", "PATCH"))


def test_which_paths_need_a_token() -> None:
    for path in ("/v1/tasks", "/v1/tasks/1", "/v1/tasks/1/cancel", "/tasks", "/tasks/9", "/v1"):
        assert protected(path), path
    for path in ("/health", "/openapi.yaml", "/docs", "/docs/swagger-ui.css", "/metrics", "/"):
        assert not protected(path), path


def test_the_cache_asks_the_database_once_per_ttl_and_sees_revocation() -> None:
    clock = Clock()
    table = {tokens.token_hash("good"): WRITE}
    asked: list[bytes] = []

    def lookup(digest: bytes) -> tokens.Grant | None:
        asked.append(digest)
        return table.get(digest)

    cache = TokenCache(lookup, clock=clock)
    assert cache.grant("good") == WRITE
    clock.now += 3.9
    assert cache.grant("good") == WRITE
    assert len(asked) == 1  # cached
    table.clear()  # revoked
    clock.now += 0.2  # 4.1 s after the lookup: asked again
    assert cache.grant("good") is None
    assert len(asked) == 2


def test_refusals_are_cached_and_a_new_token_works_at_once() -> None:
    clock = Clock()
    table: dict[bytes, tokens.Grant] = {}
    asked: list[bytes] = []

    def lookup(digest: bytes) -> tokens.Grant | None:
        asked.append(digest)
        return table.get(digest)

    cache = TokenCache(lookup, clock=clock)
    for _ in range(50):
        assert cache.grant("bad") is None
    assert len(asked) == 1  # a client hammering with a bad token costs one query
    fresh = tokens.new_token()
    table[tokens.token_hash(fresh)] = READ  # made after the refusals: works at once
    assert cache.grant(fresh) == READ
    clock.now += 31
    assert cache.grant("bad") is None and len(asked) == 3  # refusals expire too


def test_a_database_outage_keeps_recently_verified_tokens_only() -> None:
    clock = Clock()
    down = False

    def lookup(digest: bytes) -> tokens.Grant | None:
        if down:
            raise DatabaseUnavailable("gone")
        return WRITE if digest == tokens.token_hash("good") else None

    cache = TokenCache(lookup, clock=clock)
    assert cache.grant("good") == WRITE
    down = True
    clock.now += 10
    assert cache.grant("good") == WRITE  # the route meets the outage itself
    with pytest.raises(DatabaseUnavailable):
        cache.grant("never-seen")
    clock.now += 60
    with pytest.raises(DatabaseUnavailable):
        cache.grant("good")  # too old to trust


def test_the_cache_stays_bounded_under_a_flood_of_bad_tokens() -> None:
    cache = TokenCache(lambda d: READ if d == tokens.token_hash("good") else None,
                       max_entries=100)  # fmt: skip
    assert cache.grant("good") == READ
    for i in range(1000):
        assert cache.grant(f"garbage{i}") is None
    assert len(cache._entries) <= 100
    assert cache.grant("good") == READ


def test_the_pending_gauge_counts_at_most_once_a_second() -> None:
    clock = Clock()
    pending = [5]
    counts: list[int] = []

    def count_upto(limit: int) -> int:
        counts.append(limit)
        return min(pending[0], limit)

    gauge = PendingGauge(count_upto, 6, clock=clock)
    assert not gauge.full()  # 5 of 6
    gauge.added()
    assert not gauge.full()  # 6: not over
    gauge.added()
    assert gauge.full()  # 7 by its own count, before any new query
    assert counts == [7]  # counted no further than the limit + 1
    pending[0] = 0  # drained elsewhere
    clock.now += 0.5
    assert gauge.full()
    clock.now += 0.6
    assert not gauge.full()
    assert len(counts) == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost",
                                  "unix:/run/flowforge/api.sock"])  # fmt: skip
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_api_auth(make_settings("postgresql://u@h/db", API_AUTH="off", API_HOST=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "api.example.com"])
def test_auth_off_is_refused_on_other_addresses(host: str) -> None:
    assert not is_loopback(host)
    settings = make_settings("postgresql://u@h/db", API_AUTH="off", API_HOST=host)
    with pytest.raises(ConfigError, match="API_AUTH: off is refused unless API_HOST"):
        check_api_auth(settings)
    with pytest.raises(ConfigError):
        create_app(settings)
    check_api_auth(make_settings("postgresql://u@h/db", API_HOST=host))  # token: fine


def test_cli_without_the_database_is_one_line() -> None:
    url = "postgresql://postgres:Secret-pw-981@127.0.0.1:1/postgres"  # nothing on port 1
    result = token_cli(url, "list", DATABASE_CONNECT_TIMEOUT="1s")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot reach the database" in result.stderr
    assert "Secret-pw-981" not in result.stderr


def test_config_help_documents_every_variable() -> None:
    out = subprocess.run([FLOWFORGE, "config", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert "API_AUTH [token]" in out and "loopback" in out
    assert "API_MAX_PENDING [0]" in out and "queue_full" in out
    assert "DATABASE_URL [required]" in out and "API_TOKEN []" in out
