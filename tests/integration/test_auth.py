"""Bearer tokens: the table, the per-process cache, 401/403 on every task route, the CLI,
revocation seen by every gunicorn worker within 5 s, API_AUTH=off, API_MAX_PENDING."""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from flowforge import tokens
from flowforge.api import create_app

from ..support import (
    FLOWFORGE,
    ApiClient,
    Tokens,
    add_task,
    assert_error,
    bearer,
    issue_token,
    make_settings,
    serve,
    service_env,
    start_api,
    stop_api,
    token_cli,
)

TOKEN_SHAPE = re.compile(r"^ff_[A-Za-z0-9_-]{43}$")  # 32 random bytes, URL-safe base64


# -- the API: 401, 403, the open routes ----------------------------------------------------

ROUTES = [
    ("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("GET", "/v1/tasks/1"),
    ("PUT", "/v1/tasks/1"), ("DELETE", "/v1/tasks/1"), ("GET", "/tasks"),
    ("POST", "/tasks"), ("GET", "/tasks/1"), ("PUT", "/tasks/1"), ("DELETE", "/tasks/1"),
    ("PATCH", "/v1/tasks"), ("GET", "/v1/no-such-route"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_token_is_401_with_a_bearer_challenge(anon_client: ApiClient, db, method, path):
    add_task(db, title="kept", request_id=None)
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


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer   ", "bearer \t"])
def test_bearer_with_no_token_says_none_was_given(anon_client: ApiClient, header: str) -> None:
    # What `curl -H "Authorization: Bearer $API_TOKEN"` sends with the variable unset.
    response = anon_client.get("/v1/tasks", headers={"Authorization": header})
    error = assert_error(response, 401, "unauthorized")
    assert error["message"].startswith("no token was given"), error
    assert "unknown or revoked" not in error["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowforge", error="invalid_token"'


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "ff_abc"])
def test_another_scheme_is_401(anon_client: ApiClient, header: str) -> None:
    response = anon_client.get("/v1/tasks", headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="flowforge"'


def test_a_read_token_reads_and_may_not_write(read_client: ApiClient, db) -> None:
    task_id = add_task(db, title="kept", request_id=None)
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


def test_create_prints_the_token_alone_and_it_works_at_once(
    database_url: str, anon_client: ApiClient, db
) -> None:
    # A token the API has just refused (cached as refused) is no obstacle to a new one.
    assert anon_client.get("/v1/tasks", headers=bearer(tokens.new_token())).status_code == 401
    made = token_cli(database_url, "create", "ci-reader", "--scope", "read")
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
    token = token_cli(database_url, "create", "lister", "--scope", "write").stdout.strip()
    assert token_cli(database_url, "revoke", "lister").returncode == 0
    listed = token_cli(database_url, "list")
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
    result = token_cli(database_url, *args)
    assert result.returncode == code, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("flowforge: error: ")
    assert message in result.stderr


def test_revoking_twice_is_fine_and_keeps_the_first_time(database_url: str, db) -> None:
    token_cli(database_url, "create", "twice", "--scope", "read")
    first = token_cli(database_url, "revoke", "twice")
    assert first.returncode == 0 and "revoked token 'twice'" in first.stderr
    when = db.execute("SELECT revoked_at FROM api_tokens WHERE name = 'twice'").fetchone()
    again = token_cli(database_url, "revoke", "twice")
    assert again.returncode == 0 and "already revoked" in again.stderr
    assert db.execute("SELECT revoked_at FROM api_tokens WHERE name = 'twice'").fetchone() == when
    # The name stays taken: a revoked token's record is kept.
    assert token_cli(database_url, "create", "twice", "--scope", "read").returncode == 1


# -- gunicorn: revocation within 5 s in every worker; tokens never logged ------------------


def test_a_revoked_token_is_refused_by_every_worker_within_5_seconds(
    database_url: str, db, tmp_path
) -> None:
    log_path = tmp_path / "api.log"
    proc, base = start_api(database_url, log_path, API_WORKERS="2")
    try:
        token = token_cli(database_url, "create", "soon-revoked", "--scope", "read").stdout.strip()
        headers = bearer(token)

        def get(_: int) -> tuple[float, int]:
            started = time.monotonic()
            return started, requests.get(
                f"{base}/v1/tasks", headers=headers, timeout=10
            ).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            # Enough overlapping requests that both workers verify (and cache) the token.
            assert {s for _, s in pool.map(get, range(40))} == {200}
            assert token_cli(database_url, "revoke", "soon-revoked").returncode == 0
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
