"""Bearer tokens: the table, the per-process cache, 401/403 on every task route, the CLI,
revocation seen by every gunicorn worker within 5 s, API_AUTH=off, API_MAX_PENDING."""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from flowforge import tokens
from flowforge.api import create_app
from flowforge.api.admission import PendingGauge
from flowforge.api.auth import TokenCache, protected
from flowforge.config import ConfigError, check_api_auth, is_loopback
from flowforge.db import DatabaseUnavailable

from .conftest import (
    FLOWFORGE,
    ApiClient,
    Tokens,
    bearer,
    issue_token,
    make_settings,
    service_env,
)
from .test_api import assert_error, serve, start_api, stop_api

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


# -- the API: 401, 403, the open routes ----------------------------------------------------

ROUTES = [
    ("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("GET", "/v1/tasks/1"),
    ("PUT", "/v1/tasks/1"), ("DELETE", "/v1/tasks/1"), ("GET", "/tasks"),
    ("POST", "/tasks"), ("GET", "/tasks/1"), ("PUT", "/tasks/1"), ("DELETE", "/tasks/1"),
    ("PATCH", "/v1/tasks"), ("GET", "/v1/no-such-route"),
]  # fmt: skip


def _task(db: psycopg.Connection) -> int:
    return db.execute("INSERT INTO tasks (title) VALUES ('kept') RETURNING id").fetchone()[0]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token_is_401_with_a_bearer_challenge(anon_client: ApiClient, db, method, path):
    _task(db)
    response = anon_client.request(method, path, json={"title": "x"},
                                   headers={"X-Request-ID": "anon-1"})  # fmt: skip
    error = assert_error(response, 401, "unauthorized")
    assert "Authorization: Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowforge"'
    assert response.headers["X-Request-ID"] == "anon-1"
    assert db.execute("SELECT id, title FROM tasks").fetchall() == [(1, "kept")]


@pytest.mark.parametrize(
    "header",
    ["Bearer ff_unknown", "Bearer " + tokens.new_token(), "bearer  nonsense==", "Bearer",
     "Bearer a b", "Bearer " + "x" * 300],
)  # fmt: skip
def test_an_unknown_token_is_401_invalid_token(anon_client: ApiClient, db, header: str) -> None:
    response = anon_client.get("/v1/tasks", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == 'Bearer realm="flowforge", error="invalid_token"'


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "ff_abc"])
def test_another_scheme_is_401(anon_client: ApiClient, header: str) -> None:
    response = anon_client.get("/v1/tasks", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowforge"'


def test_a_read_token_reads_and_may_not_write(read_client: ApiClient, db) -> None:
    task_id = _task(db)
    assert read_client.get("/v1/tasks").json()["meta"]["total"] == 1
    assert read_client.get(f"/tasks/{task_id}").json()["data"]["title"] == "kept"
    assert read_client.head(f"/v1/tasks/{task_id}").status_code == 200
    for method, path, body in (
        ("POST", "/v1/tasks", {"title": "no"}),
        ("PUT", f"/v1/tasks/{task_id}", {"title": "no"}),
        ("DELETE", f"/v1/tasks/{task_id}", None),
        ("POST", "/tasks", {"title": "no"}),
        ("POST", f"/v1/tasks/{task_id}/cancel", None),  # task actions need write too
    ):
        response = read_client.request(method, path, json=body)
        error = assert_error(response, 403, "forbidden")
        assert "write token" in error["message"], (method, path)
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert db.execute("SELECT id, title FROM tasks").fetchall() == [(task_id, "kept")]


def test_a_write_token_does_everything(client: ApiClient, db) -> None:
    created = client.post("/v1/tasks", json={"title": "mine"})
    assert created.status_code == 201
    url = created.headers["Location"]
    assert client.put(url, json={"title": "changed"}).json()["data"]["title"] == "changed"
    assert client.delete(url).status_code == 204


def test_open_routes_need_no_token(anon_client: ApiClient) -> None:
    assert anon_client.get("/health").status_code == 200
    assert anon_client.get("/openapi.yaml").status_code == 200
    assert_error(anon_client.get("/no/such/route"), 404, "not_found")  # not a 401


def test_the_database_down_during_a_lookup_is_503(settings, db) -> None:
    broken = make_settings(settings.database_url.replace("/flowforge_test", "/no_such_db"),
                           DATABASE_CONNECT_TIMEOUT="1s")  # fmt: skip
    with serve(create_app(broken)) as url:
        response = requests.get(f"{url}/v1/tasks", headers=bearer(tokens.new_token()))
    assert_error(response, 503, "service_unavailable")


# -- the CLI -------------------------------------------------------------------------------


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLOWFORGE, "token", *args], env=service_env(database_url, **env),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_create_prints_the_token_alone_and_it_works_at_once(
    database_url: str, anon_client: ApiClient, db
) -> None:
    # A token the API has just refused (cached as refused) is no obstacle to a new one.
    assert anon_client.get("/v1/tasks", headers=bearer(tokens.new_token())).status_code == 401
    made = cli(database_url, "create", "ci-reader", "--scope", "read")
    assert made.returncode == 0, made.stderr
    assert TOKEN_SHAPE.match(made.stdout.rstrip("\n")) and made.stdout.count("\n") == 1
    token = made.stdout.strip()
    assert anon_client.get("/v1/tasks", headers=bearer(token)).status_code == 200
    assert anon_client.post("/v1/tasks", json={"title": "x"},
                            headers=bearer(token)).status_code == 403  # fmt: skip
    row = db.execute("SELECT scope, token_hash, revoked_at FROM api_tokens "
                     "WHERE name = 'ci-reader'").fetchone()  # fmt: skip
    assert row == ("read", tokens.token_hash(token), None)  # only the hash is stored


def test_list_shows_names_scopes_and_dates_never_a_token(database_url: str, db) -> None:
    token = cli(database_url, "create", "lister", "--scope", "write").stdout.strip()
    assert cli(database_url, "revoke", "lister").returncode == 0
    listed = cli(database_url, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SCOPE", "CREATED"]
    mine = [line for line in lines if line.startswith("lister ")]
    assert len(mine) == 1 and " write " in mine[0]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d{4}-\d\d-\d\d", mine[0])  # revoked
    assert any(line.startswith("tests-read ") and line.endswith("-") for line in lines)
    digest = tokens.token_hash(token)
    for secret in (token, token[3:20], digest.hex(), digest.hex()[:16]):
        assert secret not in listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "tests-write", "--scope", "write"], 1, "already exists"),
        (["create", "new", "--scope", "admin"], 2, "bad scope 'admin'"),
        (["create", "has space", "--scope", "read"], 2, "bad token name"),
        (["create", "x" * 101, "--scope", "read"], 2, "bad token name"),
        (["revoke", "nobody"], 1, "no token named 'nobody'"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(database_url, db, args, code, message) -> None:
    result = cli(database_url, *args)
    assert result.returncode == code, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("flowforge: error: ")
    assert message in result.stderr


def test_cli_without_the_database_is_one_line() -> None:
    url = "postgresql://postgres:Secret-pw-981@127.0.0.1:1/postgres"  # nothing on port 1
    result = cli(url, "list", DATABASE_CONNECT_TIMEOUT="1s")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot reach the database" in result.stderr
    assert "Secret-pw-981" not in result.stderr


def test_revoking_twice_is_fine_and_keeps_the_first_time(database_url: str, db) -> None:
    cli(database_url, "create", "twice", "--scope", "read")
    first = cli(database_url, "revoke", "twice")
    assert first.returncode == 0 and "revoked token 'twice'" in first.stderr
    when = db.execute("SELECT revoked_at FROM api_tokens WHERE name = 'twice'").fetchone()
    again = cli(database_url, "revoke", "twice")
    assert again.returncode == 0 and "already revoked" in again.stderr
    assert db.execute("SELECT revoked_at FROM api_tokens WHERE name = 'twice'").fetchone() == when
    # The name stays taken: a revoked token's record is kept.
    assert cli(database_url, "create", "twice", "--scope", "read").returncode == 1


# -- gunicorn: revocation within 5 s in every worker; tokens never logged ------------------


def test_a_revoked_token_is_refused_by_every_worker_within_5_seconds(
    database_url: str, db, tmp_path
) -> None:
    log_path = tmp_path / "api.log"
    proc, base = start_api(database_url, log_path, API_WORKERS="2")
    try:
        token = cli(database_url, "create", "soon-revoked", "--scope", "read").stdout.strip()
        headers = bearer(token)

        def get(_: int) -> tuple[float, int]:
            started = time.monotonic()
            return started, requests.get(
                f"{base}/v1/tasks", headers=headers, timeout=10
            ).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            # Enough overlapping requests that both workers verify (and cache) the token.
            assert {s for _, s in pool.map(get, range(40))} == {200}
            assert cli(database_url, "revoke", "soon-revoked").returncode == 0
            revoked = time.monotonic()
            results: list[tuple[float, int]] = []
            while time.monotonic() < revoked + 6:
                results.extend(pool.map(get, range(8)))
        late = [status for started, status in results if started >= revoked + 5]
        assert len(late) >= 8 and set(late) == {401}, results
        assert 401 in {status for started, status in results if started < revoked + 5}
    finally:
        stop_api(proc)
    assert token not in log_path.read_text() and token[3:20] not in log_path.read_text()


def test_api_auth_off_is_refused_on_a_public_address_exit_2(database_url: str) -> None:
    env = service_env(database_url, API_AUTH="off", API_HOST="0.0.0.0", API_PORT="1")
    result = subprocess.run([FLOWFORGE, "api"], env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "API_AUTH: off is refused unless API_HOST is a loopback address" in result.stderr


def test_api_auth_off_on_loopback_serves_without_tokens(database_url: str, db, tmp_path) -> None:
    proc, base = start_api(database_url, tmp_path / "api.log", API_AUTH="off",
                           API_WORKERS="1")  # fmt: skip
    try:
        created = requests.post(f"{base}/v1/tasks", json={"title": "open"}, timeout=10)
        assert created.status_code == 201
        assert requests.get(f"{base}/v1/tasks", timeout=10).json()["meta"]["total"] == 1
    finally:
        stop_api(proc)


# -- API_MAX_PENDING -----------------------------------------------------------------------


def test_over_max_pending_task_creation_is_429_queue_full(settings, db, api_tokens: Tokens) -> None:
    app = create_app(make_settings(settings.database_url, API_MAX_PENDING="2"))
    db.execute(
        "INSERT INTO tasks (title, status) SELECT 'done', 'completed' FROM generate_series(1, 5)"
    )  # fmt: skip  (only pending ones count)
    with serve(app) as url, ApiClient(url, api_tokens.write) as api:
        statuses = [api.post("/v1/tasks", json={"title": f"t{i}"}).status_code for i in range(3)]
        assert statuses == [201, 201, 201]  # 2 pending is not over the limit: a third fits
        refused = api.post("/tasks", json={"title": "one too many"})
        error = assert_error(refused, 429, "queue_full")
        assert error["details"] == {"max_pending": 2}
        assert refused.headers["Retry-After"] == "5"
        assert db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone() == (3,)
        # Reads and bad input are not affected.
        assert api.get("/v1/tasks").status_code == 200
        assert_error(api.post("/v1/tasks", json={"title": ""}), 400, "validation_failed")
        # Drained: within about a second (the count is cached that long) creation works again.
        db.execute("UPDATE tasks SET status = 'completed' WHERE status = 'pending'")
        deadline = time.monotonic() + 5
        while (status := api.post("/v1/tasks", json={"title": "again"}).status_code) == 429:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status == 201


def test_issue_token_helper_replaces_a_revoked_token(database_url: str, db) -> None:
    first = issue_token(database_url, "helper", "read")
    db.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'helper'")
    second = issue_token(database_url, "helper", "write")
    row = db.execute("SELECT token_hash, scope, revoked_at FROM api_tokens WHERE name = 'helper'")
    assert first != second and row.fetchone() == (tokens.token_hash(second), "write", None)


def test_routes_learn_which_token_asked(settings, db, api_tokens: Tokens) -> None:
    import bottle

    app = create_app(settings)

    def whoami() -> bytes:
        environ = bottle.request.environ
        return f"{environ['flowforge.token_id']} {environ['flowforge.token_scope']}".encode()

    app.route("/v1/whoami", "GET", whoami)
    ids = dict(db.execute("SELECT scope, id FROM api_tokens WHERE name LIKE 'tests-%'").fetchall())
    with serve(app) as url:
        for scope in ("write", "read"):
            response = requests.get(f"{url}/v1/whoami", headers=api_tokens.headers(scope))
            assert response.text == f"{ids[scope]} {scope}"


def test_config_help_documents_every_variable() -> None:
    out = subprocess.run([FLOWFORGE, "config", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    assert "API_AUTH [token]" in out and "loopback" in out
    assert "API_MAX_PENDING [0]" in out and "queue_full" in out
    assert "DATABASE_URL [required]" in out and "API_TOKEN []" in out
