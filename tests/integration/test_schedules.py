"""Schedules: the /v1/schedules routes over real HTTP, and firing on a real PostgreSQL with
a clock the test drives: exactly one task per due time with several firing processes,
catch-up after downtime once, time zones."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flowforge.domain import schedules
from flowforge.stores.schedules import FIRE_SCHEDULES, fire_due, on

from ..support import ApiClient, assert_error, statuses, wait_until

T0 = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def sched_db(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("TRUNCATE schedules")
    return db


def add(db: psycopg.Connection, name: str, cron: str, next_run_at: datetime, tz="UTC") -> None:
    db.execute(
        "INSERT INTO schedules (name, cron, timezone, title, next_run_at, payload) "
        "VALUES (%s, %s, %s, %s, %s, '{\"k\": 1}')",
        [name, cron, tz, f"run {name}", next_run_at],
    )


# -- firing with a controllable clock ------------------------------------------------------


def test_a_due_schedule_fires_once_per_due_time(sched_db) -> None:
    add(sched_db, "every-minute", "* * * * *", datetime(2026, 11, 25, 12, 1, tzinfo=UTC))
    run = on(sched_db)
    assert fire_due(run, T0) == 0  # not due yet
    now = datetime(2026, 11, 25, 12, 1, 0, 200000, tzinfo=UTC)
    assert fire_due(run, now) == 1
    assert fire_due(run, now) == 0  # the same tick again: nothing
    assert fire_due(run, now + timedelta(seconds=30)) == 0
    assert fire_due(run, now + timedelta(seconds=60)) == 1
    rows = sched_db.execute(
        "SELECT title, schedule, run_at, payload, request_id FROM tasks ORDER BY id"
    ).fetchall()
    assert [(r[0], r[1], r[2].minute, r[3]) for r in rows] == [
        ("run every-minute", "every-minute", 1, {"k": 1}),
        ("run every-minute", "every-minute", 2, {"k": 1}),
    ]
    assert rows[0][4] == "schedule:every-minute@2026-11-25T12:01:00Z"
    last, nxt = sched_db.execute("SELECT last_run_at, next_run_at FROM schedules").fetchone()
    assert (last.minute, nxt.minute) == (2, 3)


def test_catch_up_after_downtime_runs_once(sched_db) -> None:
    add(sched_db, "s", "*/5 * * * *", datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    later = datetime(2026, 11, 25, 12, 2, tzinfo=UTC)  # 49 ticks missed
    assert fire_due(on(sched_db), later) == 1
    assert fire_due(on(sched_db), later + timedelta(minutes=2)) == 0
    (nxt,) = sched_db.execute("SELECT next_run_at FROM schedules").fetchone()
    assert nxt == datetime(2026, 11, 25, 12, 5, tzinfo=UTC)
    assert sched_db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_a_schedule_that_cannot_be_computed_is_skipped(sched_db, caplog) -> None:
    add(sched_db, "broken", "* * * * *", T0, tz="Nowhere/Atlantis")
    add(sched_db, "fine", "* * * * *", T0)
    assert fire_due(on(sched_db), T0) == 1
    assert "broken" in caplog.text


def _fire_for_minutes(url: str, start: str, minutes: int, barrier) -> int:
    """One firing process: ticks every 5 simulated seconds for ``minutes`` minutes."""
    created = 0
    now = datetime.fromisoformat(start)
    with psycopg.connect(url, autocommit=True) as conn:
        run = on(conn)
        barrier.wait()
        for _ in range(minutes * 12):
            now += timedelta(seconds=5)
            created += fire_due(run, now)
    return created


def test_two_processes_firing_for_ten_simulated_minutes_make_one_task_per_tick(
    sched_db, database_url: str
) -> None:
    start = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    add(sched_db, "a", "* * * * *", start + timedelta(minutes=1))
    add(sched_db, "b", "*/2 * * * *", start + timedelta(minutes=2))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    with ctx.Pool(2) as pool:
        results = pool.starmap(
            _fire_for_minutes, [(database_url, start.isoformat(), 10, barrier)] * 2
        )
    rows = sched_db.execute(
        "SELECT schedule, run_at, count(*) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert {count for *_, count in rows} == {1}  # never twice for one due time
    ticks = {name: [run_at.minute for n, run_at, _ in rows if n == name] for name in "ab"}
    assert ticks == {"a": list(range(1, 11)), "b": [2, 4, 6, 8, 10]}
    assert sum(results) == 15  # each creation counted by the process that made it


# -- the API -------------------------------------------------------------------------------


def test_create_get_list_update_delete(client: ApiClient, sched_db, settings) -> None:
    body = {"name": "nightly-report", "cron": "0 3 * * *", "timezone": "Europe/Riga",
            "title": "Nightly report", "type": "sleep", "payload": {"seconds": 0},
            "queue": "reports", "priority": 5}  # fmt: skip
    response = client.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/v1/schedules/nightly-report"
    created = response.json()["data"]
    for field, value in body.items():
        assert created[field] == value
    assert created["max_attempts"] == settings.task_max_attempts
    assert created["timeout"] == settings.task_timeout
    assert created["last_run_at"] is None
    nxt = datetime.fromisoformat(created["next_run_at"])
    assert nxt > datetime.now(UTC) and nxt.astimezone(schedules.zone("Europe/Riga")).hour == 3

    assert client.get("/v1/schedules/nightly-report").json()["data"] == created
    listing = client.get("/v1/schedules").json()
    assert listing["meta"] == {"page": 1, "limit": 20, "total": 1}
    assert [s["name"] for s in listing["data"]] == ["nightly-report"]

    before = datetime.now(UTC)
    changed = client.put("/v1/schedules/nightly-report", json={"cron": "*/10 * * * *"})
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert data["cron"] == "*/10 * * * *" and data["title"] == "Nightly report"
    # Moved to the new cron: the next ten-minute mark. (Not "before the old one": from
    # 02:50 to 03:00 in Riga the two are the same instant.)
    moved = datetime.fromisoformat(data["next_run_at"])
    assert before < moved <= datetime.now(UTC) + timedelta(minutes=10), (before, moved)
    assert (moved.minute % 10, moved.second, moved.microsecond) == (0, 0, 0)
    same = client.put("/v1/schedules/nightly-report", json={"priority": 9}).json()["data"]
    assert same["next_run_at"] == data["next_run_at"] and same["priority"] == 9

    assert client.delete("/v1/schedules/nightly-report").status_code == 204
    assert_error(client.get("/v1/schedules/nightly-report"), 404, "not_found")
    assert_error(client.delete("/v1/schedules/nightly-report"), 404, "not_found")


def test_defaults_and_a_duplicate_name(client: ApiClient, sched_db) -> None:
    body = {"name": "m", "cron": "* * * * *", "title": "t"}
    created = client.post("/v1/schedules", json=body).json()["data"]
    assert (created["timezone"], created["type"], created["queue"], created["priority"]) == (
        "UTC",
        "noop",
        "default",
        0,
    )
    assert created["payload"] == {}
    error = assert_error(client.post("/v1/schedules", json=body), 409, "conflict")
    assert error["details"] == {"name": "m"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "* * * * *", "title": "t"}, "name"),
        ({"name": "a/b", "cron": "* * * * *", "title": "t"}, "name"),
        ({"name": "-a", "cron": "* * * * *", "title": "t"}, "name"),
        ({"name": "a\n", "cron": "* * * * *", "title": "t"}, "name"),  # the CHECK refuses it
        ({"name": "a", "cron": "* * * * *", "title": "t", "queue": "q\n"}, "queue"),
        ({"name": "a", "title": "t"}, "cron"),
        ({"name": "a", "cron": "* * * *", "title": "t"}, "cron"),
        ({"name": "a", "cron": "99 * * * *", "title": "t"}, "cron"),
        ({"name": "a", "cron": "* * * * *"}, "title"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "timezone": "Mars/Base"}, "timezone"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "timezone": "../etc"}, "timezone"),
        # the host's own zone: it would fire at other hours on other hosts
        ({"name": "a", "cron": "* * * * *", "title": "t", "timezone": "localtime"}, "timezone"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "type": "nope"}, "type"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "queue": "Q"}, "queue"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "priority": 101}, "priority"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "payload": []}, "payload"),
        ({"name": "a", "cron": "* * * * *", "title": "t", "every": 5}, "every"),
    ],
)
def test_bad_schedules_are_400(client: ApiClient, sched_db, body: dict, field: str) -> None:
    error = assert_error(client.post("/v1/schedules", json=body), 400, "validation_failed")
    assert field in error["details"]
    assert sched_db.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


def test_put_errors(client: ApiClient, sched_db) -> None:
    assert_error(client.put("/v1/schedules/none", json={"title": "x"}), 404, "not_found")
    client.post("/v1/schedules", json={"name": "s", "cron": "* * * * *", "title": "t"})
    error = assert_error(
        client.put("/v1/schedules/s", json={"name": "t"}), 400, "validation_failed"
    )
    assert set(error["details"]) == {"name"}
    assert_error(client.put("/v1/schedules/s", json={}), 400, "validation_failed")
    assert_error(client.put("/v1/schedules/s", json={"cron": "x"}), 400, "validation_failed")
    assert client.put("/v1/schedules/s", json={"name": "s", "title": "u"}).status_code == 200


def test_list_pages_and_refuses_unknown_parameters(client: ApiClient, sched_db) -> None:
    for i in range(3):
        client.post("/v1/schedules", json={"name": f"s{i}", "cron": "* * * * *", "title": "t"})
    page = client.get("/v1/schedules", params={"limit": 2, "page": 2}).json()
    assert [s["name"] for s in page["data"]] == ["s2"] and page["meta"]["total"] == 3
    assert_error(client.get("/v1/schedules?name=s1"), 400, "validation_failed")
    assert_error(client.get("/v1/schedules?limit=0"), 400, "validation_failed")


def test_schedules_need_a_token(anon_client: ApiClient, read_client: ApiClient, sched_db) -> None:
    assert_error(anon_client.get("/v1/schedules"), 401, "unauthorized")
    assert read_client.get("/v1/schedules").status_code == 200
    body = {"name": "x", "cron": "* * * * *", "title": "t"}
    assert_error(read_client.post("/v1/schedules", json=body), 403, "forbidden")


# -- real workers --------------------------------------------------------------------------


def test_two_worker_processes_fire_a_due_schedule_once_and_run_its_task(sched_db, spawn) -> None:
    """The worker's hook: two `flowforge worker` processes look for due schedules every
    second; three due times a second apart make three tasks, each completed once."""
    workers = [spawn(name=f"w{i}") for i in range(2)]
    for w in workers:
        w.wait_for("worker ready")
    for offset in (1, 2, 3):
        sched_db.execute(
            "INSERT INTO schedules (name, cron, title, next_run_at) "
            "VALUES (%s, '0 0 1 1 *', 'yearly', now() + make_interval(secs => %s))",
            [f"s{offset}", offset],
        )
    wait_until(
        lambda: statuses(sched_db) == {"completed": 3}, 30, "three scheduled tasks completed"
    )
    rows = sched_db.execute("SELECT schedule, attempts FROM tasks ORDER BY schedule").fetchall()
    assert rows == [("s1", 1), ("s2", 1), ("s3", 1)]
    nxt = sched_db.execute("SELECT DISTINCT next_run_at > now() FROM schedules").fetchall()
    assert nxt == [(True,)]  # moved on to next year
    assert [w.stop() for w in workers] == [0, 0]


def test_a_schema_without_schedules_does_not_stop_the_worker(admin_url: str, caplog) -> None:
    """Refused (no schedules table): logged, nothing fired, the worker's loop goes on."""
    from flowforge.worker.queue import TaskQueue

    from ..support import create_database, make_settings

    url = create_database(admin_url, "flowforge_no_schedules")
    queue = TaskQueue(make_settings(url), "w")
    try:
        assert queue.fire_schedules(T0) == 0
        assert queue.fire_schedules(T0 + timedelta(seconds=1)) == 0
    finally:
        queue.close()
    assert caplog.text.count("schedules not fired") == 1


# -- paused, and run now -------------------------------------------------------------------


def test_a_paused_schedule_does_not_fire_and_resumes_at_the_next_due_time(
    client: ApiClient, sched_db
) -> None:
    body = {"name": "m", "cron": "* * * * *", "title": "every minute"}
    assert client.post("/v1/schedules", json=body).json()["data"]["paused"] is False
    paused = client.put("/v1/schedules/m", json={"paused": True})
    assert paused.status_code == 200, paused.text
    assert paused.json()["data"]["paused"] is True
    assert client.get("/v1/schedules/m").json()["data"]["paused"] is True
    # An hour of due times goes by while it is paused: none fires.
    sched_db.execute("UPDATE schedules SET next_run_at = now() - interval '1 hour'")
    now = datetime.now(UTC)
    assert fire_due(on(sched_db), now) == 0
    assert sched_db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)

    resumed = client.put("/v1/schedules/m", json={"paused": False}).json()["data"]
    nxt = datetime.fromisoformat(resumed["next_run_at"])
    assert resumed["paused"] is False and nxt > now  # not the missed hour: the next minute
    assert (nxt.second, nxt.microsecond) == (0, 0) and nxt - now < timedelta(minutes=1, seconds=5)
    assert fire_due(on(sched_db), now) == 0  # no backlog: the missed hour is gone
    assert fire_due(on(sched_db), nxt) == 1
    (run_at,) = sched_db.execute("SELECT run_at FROM tasks").fetchone()
    assert run_at == nxt
    # A PUT that leaves paused alone keeps next_run_at (only a resume or a new cron moves it).
    same = client.put("/v1/schedules/m", json={"title": "renamed"}).json()["data"]
    assert same["next_run_at"] == client.get("/v1/schedules/m").json()["data"]["next_run_at"]


def test_a_pause_between_the_read_and_the_fire_wins(sched_db) -> None:
    """The firing statement checks paused itself: a PUT that paused the schedule after a
    worker read it as due makes that worker's fire create nothing."""
    add(sched_db, "s", "* * * * *", T0)
    sched_db.execute("UPDATE schedules SET paused = true")
    params = {"names": ["s"], "due": [T0], "next": [T0 + timedelta(minutes=1)]}
    assert sched_db.execute(FIRE_SCHEDULES, params).fetchone() == (0,)
    assert sched_db.execute("SELECT next_run_at FROM schedules").fetchone() == (T0,)
    sched_db.execute("UPDATE schedules SET paused = false")
    assert sched_db.execute(FIRE_SCHEDULES, params).fetchone() == (1,)


def test_created_paused_and_paused_must_be_a_boolean(client: ApiClient, sched_db) -> None:
    body = {"name": "p", "cron": "0 3 * * *", "title": "t", "paused": True}
    created = client.post("/v1/schedules", json=body).json()["data"]
    assert created["paused"] is True
    assert fire_due(on(sched_db), datetime.fromisoformat(created["next_run_at"])) == 0
    for bad in ("yes", 1, None):
        error = assert_error(
            client.put("/v1/schedules/p", json={"paused": bad}), 400, "validation_failed"
        )
        assert error["details"] == {"paused": "must be true or false"}


def test_run_now_creates_one_task_and_leaves_the_schedule_alone(
    client: ApiClient, read_client: ApiClient, sched_db
) -> None:
    body = {"name": "nightly", "cron": "0 3 * * *", "title": "Nightly", "type": "sleep",
            "payload": {"seconds": 0}, "queue": "reports", "priority": 5, "max_attempts": 2,
            "timeout": 60, "paused": True}  # fmt: skip
    schedule = client.post("/v1/schedules", json=body).json()["data"]
    before = datetime.now(UTC)
    response = client.post("/v1/schedules/nightly/run")
    assert response.status_code == 201, response.text
    task = response.json()["data"]
    assert response.headers["Location"] == f"/v1/tasks/{task['id']}"
    for field in ("title", "type", "payload", "queue", "priority", "max_attempts", "timeout"):
        assert task[field] == body[field], field
    assert (task["status"], task["schedule"], task["attempts"]) == ("pending", "nightly", 0)
    assert task["request_id"] == response.headers["X-Request-ID"]
    assert before - timedelta(seconds=5) <= datetime.fromisoformat(task["run_at"])
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"] == task
    # Paused or not, a run is made; the schedule's own times do not move.
    assert client.get("/v1/schedules/nightly").json()["data"] == schedule
    assert client.post("/v1/schedules/nightly/run").status_code == 201
    made = sched_db.execute("SELECT count(*) FROM tasks WHERE schedule = 'nightly'").fetchone()
    assert made == (2,)

    assert_error(client.post("/v1/schedules/nope/run"), 404, "not_found")
    assert_error(client.post("/v1/schedules/a%20b/run"), 404, "not_found")
    assert_error(read_client.post("/v1/schedules/nightly/run"), 403, "forbidden")
    assert sched_db.execute("SELECT count(*) FROM tasks").fetchone() == (2,)
