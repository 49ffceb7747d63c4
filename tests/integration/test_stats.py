"""GET /v1/stats: the dashboard's JSON, over real HTTP on a real PostgreSQL."""

from __future__ import annotations

import hashlib
import re

import psycopg
import requests

from flowforge import web

from ..support import ApiClient, Tokens, assert_error


def test_stats_counts_finishes_failures_and_live_workers(
    read_client: ApiClient, db: psycopg.Connection
) -> None:
    db.execute("DELETE FROM workers")
    db.execute(
        "INSERT INTO tasks (title, queue, run_at) VALUES ('a', 'mail', now() - interval '90 s'), "
        "('b', 'default', now()), ('later', 'default', now() + interval '1 h')"
    )
    db.execute(
        "INSERT INTO tasks (title, status, attempts, started_at, completed_at, last_error) "
        "SELECT 'done ' || g, CASE WHEN g <= 4 THEN 'completed' ELSE 'failed' END, 1, now(), "
        "now() - make_interval(mins => g % 2), CASE WHEN g > 4 THEN 'boom ' || g END "
        "FROM generate_series(1, 6) g"
    )
    db.execute(
        "INSERT INTO workers (id, host, pid, version, queues, capacity, busy, isolation, "
        "expires_at) VALUES ('h:1', 'h', 1, '0.1.0', '{*}', 8, 3, 'process', now() + "
        "interval '1 min'), ('h:2', 'h', 2, '0.1.0', '{mail}', 8, 0, 'process', now() - "
        "interval '1 s')"
    )
    response = read_client.get("/v1/stats")
    assert response.status_code == 200, response.text
    stats = response.json()["data"]
    assert stats["tasks"]["by_status"] == {
        "pending": 3, "processing": 0, "completed": 4, "failed": 2, "cancelled": 0,
    }  # fmt: skip
    assert stats["tasks"]["by_queue"]["mail"]["pending"] == 1 and stats["tasks"]["exact"]
    assert 89 <= stats["oldest_pending_age_seconds"]["mail"] < 120
    per_minute = stats["throughput_per_minute"]
    assert len(per_minute) == 15
    assert sum(p["completed"] for p in per_minute) == 4
    assert sum(p["failed"] for p in per_minute) == 2
    assert [f["last_error"] for f in stats["recent_failures"]] == ["boom 6", "boom 5"]
    assert [(w["id"], w["busy"]) for w in stats["workers"]] == [("h:1", 3)]  # h:2 expired
    db.execute("DELETE FROM workers")  # made-up workers: gone for the tests after this one


def test_stats_needs_a_token(api_url: str, api_tokens: Tokens) -> None:
    assert_error(requests.get(f"{api_url}/v1/stats", timeout=10), 401, "unauthorized")
    ok = requests.get(f"{api_url}/v1/stats", headers=api_tokens.headers("read"), timeout=10)
    assert ok.status_code == 200


def test_pages_and_their_files_are_open_and_locked_to_this_origin(api_url: str) -> None:
    for path in ("/docs", "/dashboard", "/docs/swagger-ui-bundle.js", "/dashboard/dashboard.js"):
        response = requests.get(api_url + path, timeout=10)
        assert response.status_code == 200, path
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert (
        requests.get(api_url + "/docs", timeout=10).headers["Content-Type"].startswith("text/html")
    )
    for path in ("/docs/index.html", "/docs/..%2Fweb%2F__init__.py", "/dashboard/nope.js"):
        assert_error(requests.get(api_url + path, timeout=10), 404, "not_found")


def test_pages_name_their_files_by_version_so_an_upgrade_is_seen_at_once(api_url: str) -> None:
    # A browser kept an hour-old dashboard.js beside a new page after an upgrade: the
    # page now names each file with its content's digest and is revalidated every time.
    for page, prefix, files in (
        ("/dashboard", "/dashboard", web.DASHBOARD_FILES),
        ("/docs", "/docs", web.DOCS_FILES),
    ):
        response = requests.get(api_url + page, timeout=10)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-cache"
        named = dict(re.findall(rf'(?:src|href)="{prefix}/([^"?]+)\?v=([0-9a-f]+)"', response.text))
        # every file the dashboard has; Swagger UI's page names all but one favicon
        assert named and set(named) <= set(files), page
        assert prefix != "/dashboard" or set(named) == set(files)
        assert not re.search(rf'(?:src|href)="{prefix}/[^"?]+"', response.text)  # none bare
        for name, version in named.items():
            body = (files[name] / name).read_bytes()
            assert version == hashlib.sha256(body).hexdigest()[:12], name
            asset = requests.get(f"{api_url}{prefix}/{name}?v={version}", timeout=10)
            assert asset.status_code == 200 and asset.content == body, name
            assert asset.headers["Cache-Control"] == "public, max-age=86400"
