"""Lists at scale: cursors (keyset pages), totals that stop counting, and `fields=`."""

from __future__ import annotations

import base64

import orjson
import psycopg
import pytest

from flowforge.stores import tasks_sql

from ..support import ApiClient, assert_error, create


def _walk(client: ApiClient, **params: object) -> list[list[int]]:
    """Every page by following meta.next_cursor; the ids of each page."""
    pages: list[list[int]] = []
    body = client.get("/v1/tasks", params=params).json()
    while True:
        pages.append([t["id"] for t in body["data"]])
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            return pages
        assert body["meta"]["page"] is None or len(pages) == 1
        body = client.get("/v1/tasks", params={**params, "cursor": cursor}).json()
        assert body["error"] is None, body


def test_cursor_pages_cover_every_task_once_newest_first(client: ApiClient) -> None:
    ids = [create(client, title=f"t{i}")["id"] for i in range(23)]
    pages = _walk(client, limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == ids[::-1]


def test_cursor_pages_stay_put_while_tasks_are_created(client: ApiClient) -> None:
    """OFFSET pages shift when rows arrive; a cursor continues below its last row."""
    ids = [create(client)["id"] for _ in range(6)]
    first = client.get("/v1/tasks", params={"limit": 3}).json()
    newer = [create(client)["id"] for _ in range(2)]
    second = client.get(
        "/v1/tasks", params={"limit": 3, "cursor": first["meta"]["next_cursor"]}
    ).json()
    assert [t["id"] for t in second["data"]] == ids[2::-1]
    assert second["meta"]["next_cursor"] is None
    assert second["meta"]["total"] == 8 and newer  # the total counts them, the page does not


def test_last_full_page_has_no_cursor(client: ApiClient) -> None:
    for _ in range(4):
        create(client)
    body = client.get("/v1/tasks", params={"limit": 4}).json()
    assert len(body["data"]) == 4 and body["meta"]["next_cursor"] is None


def test_cursor_keeps_its_filters(client: ApiClient) -> None:
    mail = [create(client, queue="mail", type="sleep")["id"] for _ in range(5)]
    create(client, queue="other")
    pages = _walk(client, queue="mail", limit=2)
    assert [i for p in pages for i in p] == mail[::-1]
    first = client.get("/v1/tasks", params={"queue": "mail", "limit": 2}).json()
    cursor = first["meta"]["next_cursor"]
    error = assert_error(
        client.get("/v1/tasks", params={"queue": "other", "cursor": cursor}),
        400,
        "validation_failed",
    )
    assert set(error["details"]) == {"cursor"}
    typed = _walk(client, type="sleep", limit=3)
    assert [i for p in typed for i in p] == mail[::-1]


def _cursor(raw: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(raw)).rstrip(b"=").decode()


WHEN = "2026-01-01T00:00:00+00:00"
# A cursor the API made, [version, created_at, id, [status, type, queue]], changed in one
# part: each must be refused by type before any of it reaches SQL (issue 22, 1: an id of
# `true` was a 500, "bigint < boolean", and broke the lists after it).
TAMPERED = [
    [1, WHEN, True, [None] * 3],
    [1, WHEN, False, [None] * 3],
    [True, WHEN, 1, [None] * 3],
    [1, WHEN, "1", [None] * 3],
    [1, WHEN, 1.0, [None] * 3],
    [1, WHEN, None, [None] * 3],
    [1, WHEN, [1], [None] * 3],
    [1, WHEN, 0, [None] * 3],
    [1, WHEN, -1, [None] * 3],
    [1, WHEN, 2**63, [None] * 3],
    [1, WHEN, 1, [None] * 2],
    [1, WHEN, 1, [None] * 4],
    [1, WHEN, 1, [1, None, None]],
    [1, WHEN, 1, [True, None, None]],
    [1, WHEN, 1, [[], None, None]],
    [1, WHEN, 1, {"status": None}],
    [1, WHEN, 1, None],
    [1, WHEN, 1],
    [1, WHEN, 1, [None] * 3, "more"],
    [1, 1767225600, 1, [None] * 3],
    [1, None, 1, [None] * 3],
    [1, WHEN + "\u0000junk", 1, [None] * 3],
    [1, "2026-01-01 00:00:00+00:00", 1, [None] * 3],
    [1, "2026-W01-1T00:00:00Z", 1, [None] * 3],
    [1, "0001-01-01T00:00:00+23:59", 1, [None] * 3],
    [1, "2026-02-30T00:00:00Z", 1, [None] * 3],
    {"version": 1},
    "text",
    None,
    17,
]


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "",
        base64.urlsafe_b64encode(orjson.dumps([99, "2026-01-01T00:00:00+00:00", 1, []])).decode(),
        base64.urlsafe_b64encode(orjson.dumps([1, "yesterday", 1, [None] * 3])).decode(),
        base64.urlsafe_b64encode(orjson.dumps([1, "2026-01-01T00:00:00", 1, [None] * 3])).decode(),
        *(_cursor(raw) for raw in TAMPERED),
        _cursor([1, WHEN, 1, [None] * 3]) + "!",  # base64 would skip what is not its alphabet
        _cursor([1, WHEN, 1, [None] * 3]) * 30,  # longer than any cursor the API makes
    ],
)
def test_a_cursor_we_did_not_make_is_400(client: ApiClient, cursor: str) -> None:
    create(client)  # a list that reached the database would have a row to compare with
    error = assert_error(
        client.get("/v1/tasks", params={"cursor": cursor}), 400, "validation_failed"
    )
    assert set(error["details"]) == {"cursor"}
    assert "not a cursor this API gave" in error["details"]["cursor"]


def test_cursor_and_page_together_are_400(client: ApiClient) -> None:
    for _ in range(3):
        create(client)
    cursor = client.get("/v1/tasks", params={"limit": 1}).json()["meta"]["next_cursor"]
    error = assert_error(
        client.get("/v1/tasks", params={"cursor": cursor, "page": 2}), 400, "validation_failed"
    )
    assert set(error["details"]) == {"cursor"}


def test_page_numbers_keep_working(client: ApiClient) -> None:
    ids = [create(client)["id"] for _ in range(7)]
    body = client.get("/v1/tasks", params={"page": 2, "limit": 3}).json()
    assert [t["id"] for t in body["data"]] == ids[::-1][3:6]
    assert body["meta"]["page"] == 2 and body["meta"]["total"] == 7
    # a page-numbered response hands out a cursor to the page after it, too
    after = client.get("/v1/tasks", params={"cursor": body["meta"]["next_cursor"], "limit": 3})
    assert [t["id"] for t in after.json()["data"]] == [ids[0]]


def test_fields_returns_only_those_and_id(client: ApiClient) -> None:
    task = create(client, title="light", payload={"big": "x" * 1000})
    body = client.get("/v1/tasks", params={"fields": "title,status"}).json()
    assert body["data"] == [{"id": task["id"], "title": "light", "status": "pending"}]
    body = client.get("/v1/tasks", params={"fields": "payload,id,payload"}).json()
    assert body["data"] == [{"id": task["id"], "payload": {"big": "x" * 1000}}]


def test_fields_pages_with_a_cursor_even_without_created_at(client: ApiClient) -> None:
    ids = [create(client)["id"] for _ in range(5)]
    pages = _walk(client, fields="status", limit=2)
    assert [i for p in pages for i in p] == ids[::-1]


@pytest.mark.parametrize("fields", ["", "title,secret", "id,,title", "TITLE"])
def test_unknown_fields_are_400(client: ApiClient, fields: str) -> None:
    error = assert_error(
        client.get("/v1/tasks", params={"fields": fields}), 400, "validation_failed"
    )
    assert set(error["details"]) == {"fields"}


def test_a_single_get_takes_fields_as_lists_do(client: ApiClient) -> None:
    task = create(client, title="light", payload={"big": "x" * 1000})
    url = f"/v1/tasks/{task['id']}"
    body = client.get(url, params={"fields": "title,status"}).json()
    assert body["data"] == {"id": task["id"], "title": "light", "status": "pending"}
    assert list(body["data"]) == ["id", "title", "status"]
    body = client.get(url, params={"fields": "payload,id,payload"}).json()
    assert body["data"] == {"id": task["id"], "payload": {"big": "x" * 1000}}
    # The same fields as a list's row, and without fields= the whole task.
    listed = client.get("/v1/tasks", params={"fields": "created_at,result,queue"}).json()
    assert (
        client.get(url, params={"fields": "created_at,result,queue"}).json()["data"]
        == (listed["data"][0])
    )
    assert client.get(f"/tasks/{task['id']}").json()["data"] == client.get(url).json()["data"]
    assert client.get(url).json()["data"]["payload"] == {"big": "x" * 1000}


@pytest.mark.parametrize("fields", ["", "title,secret", "id,,title", "TITLE"])
def test_a_single_get_refuses_unknown_fields_as_lists_do(client: ApiClient, fields: str) -> None:
    task = create(client)
    errors = [
        assert_error(client.get(path, params={"fields": fields}), 400, "validation_failed")
        for path in ("/v1/tasks", f"/v1/tasks/{task['id']}")
    ]
    assert errors[0]["details"] == errors[1]["details"] and set(errors[1]["details"]) == {"fields"}


@pytest.mark.parametrize(
    "query", [{"status": "pending"}, {"x": "1"}, {"fields": "id", "page": "1"}]
)
def test_a_single_get_refuses_unknown_parameters(client: ApiClient, query: dict) -> None:
    task = create(client)
    for path in (f"/v1/tasks/{task['id']}", f"/tasks/{task['id']}", "/v1/tasks/999999999"):
        error = assert_error(client.get(path, params=query), 400, "validation_failed")
        unknown = set(query) - {"fields"}
        assert set(error["details"]) == unknown
        assert "is not a known parameter (known: fields)" in error["details"][unknown.pop()]
    repeated = client.get(f"/v1/tasks/{task['id']}?fields=id&fields=title")
    assert set(assert_error(repeated, 400, "validation_failed")["details"]) == {"fields"}


def test_total_is_exact_up_to_the_cap_then_an_estimate(
    client: ApiClient, db: psycopg.Connection
) -> None:
    cap = tasks_sql.EXACT_TOTAL_MAX
    db.execute(
        "INSERT INTO tasks (title, status) SELECT 't' || g, "
        "CASE WHEN g <= 50 THEN 'failed' ELSE 'completed' END "
        "FROM generate_series(1, %s) g",
        (cap + 500,),
    )
    db.execute("ANALYZE tasks")
    everything = client.get("/v1/tasks", params={"limit": 1}).json()["meta"]
    assert everything["total_exact"] is False
    # PostgreSQL's estimate, never below what was counted before stopping
    assert everything["total"] > cap
    failed = client.get("/v1/tasks", params={"status": "failed", "limit": 1}).json()["meta"]
    assert (failed["total"], failed["total_exact"]) == (50, True)
    db.execute("DELETE FROM tasks WHERE id > %s", (cap,))
    db.execute("ANALYZE tasks")
    at_cap = client.get("/v1/tasks", params={"limit": 1}).json()["meta"]
    assert (at_cap["total"], at_cap["total_exact"]) == (cap, True)


def test_a_large_estimate_is_kept_a_moment_a_small_one_never(
    settings, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list whose estimate is large (no count follows) keeps it store.ESTIMATE_SECONDS, so
    the lists after it are one statement; below the threshold every list counts again."""
    from flowforge.db import make_engine
    from flowforge.stores import tasks as store_module
    from flowforge.stores.tasks import TaskStore

    store = TaskStore(make_engine(settings), default_max_attempts=3, lease_seconds=30)
    now = [1000.0]
    store.clock = lambda: now[0]
    db.execute("INSERT INTO tasks (title) SELECT 't' || g FROM generate_series(1, 300) g")
    db.execute("ANALYZE tasks")
    # Small (the default threshold): counted, exact, and nothing kept.
    page = store.list(limit=5)
    assert (page.total, page.total_exact) == (300, True) and store._estimates == {}
    db.execute("INSERT INTO tasks (title) SELECT 'u' || g FROM generate_series(1, 100) g")
    assert store.list(limit=5).total == 400  # no estimate stood in the way
    # Large: the threshold lowered so 400 rows count as many.
    monkeypatch.setattr(tasks_sql, "COUNT_WHEN_ESTIMATE_BELOW", 50)
    db.execute("ANALYZE tasks")
    first = store.list(limit=5)
    assert first.total_exact is False and first.total > 50
    assert [t.title for t in first.tasks] == [f"u{g}" for g in range(100, 95, -1)]
    db.execute("INSERT INTO tasks (title) SELECT 'v' || g FROM generate_series(1, 400) g")
    db.execute("ANALYZE tasks")
    now[0] += store_module.ESTIMATE_SECONDS / 2
    kept = store.list(limit=5)
    assert kept.total == first.total  # the kept estimate
    assert kept.tasks[0].title == "v400"  # the rows are always read
    now[0] += store_module.ESTIMATE_SECONDS
    assert store.list(limit=5).total > first.total  # asked again: 800 rows now
    # Another filter value is another estimate.
    assert store.list(limit=5, filters={"status": "completed"}).total == 0
    store.engine.dispose()
