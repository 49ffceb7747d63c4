"""Bad input gets a 400 with per-field details and never reaches the database; awkward but
valid input (unicode, big numbers, deep JSON) is stored as sent."""

from __future__ import annotations

import json

import pytest

from ..support import ApiClient, assert_error, create


def rejected(client: ApiClient, body, method: str = "POST", path: str = "/v1/tasks") -> dict:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.request(method, path, data=data, headers={"Content-Type": "application/json"})
    return assert_error(response, 400, "validation_failed")["details"]


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({}, "title", "is required"),
        ({"title": ""}, "title", "must not be blank"),
        ({"title": "   \t\n"}, "title", "must not be blank"),
        ({"title": "x" * 201}, "title", "at most 200"),
        ({"title": 42}, "title", "must be a string"),
        ({"title": None}, "title", "must be a string"),
        ({"title": ["a"]}, "title", "must be a string"),
        ({"title": "nul\u0000byte"}, "title", "NUL"),
        ({"title": "ok", "description": "x" * 10_001}, "description", "at most 10000"),
        ({"title": "ok", "description": 3}, "description", "must be a string"),
        ({"title": "ok", "description": "a\u0000b"}, "description", "NUL"),
        ({"title": "ok", "type": "no-such-handler"}, "type", "unknown task type"),
        ({"title": "ok", "type": ""}, "type", "must not be blank"),
        ({"title": "ok", "type": 1}, "type", "must be a string"),
        ({"title": "ok", "payload": [1, 2]}, "payload", "JSON object"),
        ({"title": "ok", "payload": "text"}, "payload", "JSON object"),
        ({"title": "ok", "payload": {"a": ["\u0000"]}}, "payload", "NUL"),
        ({"title": "ok", "payload": {"k\u0000": 1}}, "payload", "NUL"),
        ({"title": "ok", "max_attempts": 0}, "max_attempts", "between 1 and"),
        ({"title": "ok", "max_attempts": 2**64 - 1}, "max_attempts", "between 1 and"),
        ({"title": "ok", "max_attempts": 10**30}, "max_attempts", "must be an integer"),
        ({"title": "ok", "max_attempts": -(2**63) - 1}, "max_attempts", "must be an integer"),
        ({"title": "ok", "max_attempts": True}, "max_attempts", "must be an integer"),
        ({"title": "ok", "max_attempts": 2.5}, "max_attempts", "must be an integer"),
        ({"title": "ok", "run_at": "tomorrow"}, "run_at", "RFC 3339"),
        ({"title": "ok", "run_at": "2030-01-01T00:00:00"}, "run_at", "time zone"),
        ({"title": "ok", "run_at": 1700000000}, "run_at", "timestamp string"),
        ({"title": "ok", "run_at": "0001-01-01T00:00:00+01:00"}, "run_at", "years 2 and 9998"),
        ({"title": "ok", "run_at": "9999-12-31T23:00:00-05:00"}, "run_at", "years 2 and 9998"),
        ({"title": "ok", "status": "completed"}, "status", "not a known field"),
        ({"title": "ok", "id": 5}, "id", "not a known field"),
        ({"title": "ok", "created_at": "2020-01-01T00:00:00Z"}, "created_at", "not a known"),
    ],
)
def test_post_refuses_bad_fields(client: ApiClient, db, body, field: str, problem: str) -> None:
    details = rejected(client, body)
    assert field in details and problem in details[field], details
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_every_bad_field_is_reported_at_once(client: ApiClient) -> None:
    details = rejected(client, {"title": "", "description": 1, "max_attempts": 0, "bogus": 1})
    assert set(details) == {"title", "description", "max_attempts", "bogus"}


@pytest.mark.parametrize("body", [[], ["title"], "title", 1, None, True])
def test_the_body_must_be_an_object(client: ApiClient, body) -> None:
    assert rejected(client, body) == {"body": "must be an object"}


def test_huge_numbers_in_json_are_400_not_500(client: ApiClient) -> None:
    response = client.post(
        "/v1/tasks", data=b'{"title": "x", "max_attempts": 1' + b"0" * 400 + b"}",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_error(response, 400, "invalid_json")  # beyond a double: not a number we take
    response = client.post(
        "/v1/tasks", data=b'{"title": "x", "payload": {"n": 1e999}}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_error(response, 400, "invalid_json")


def test_lone_surrogates_are_invalid_json(client: ApiClient) -> None:
    response = client.post(
        "/v1/tasks", data=b'{"title": "\\ud800"}', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_limits_are_inclusive(client: ApiClient) -> None:
    task = create(client, title="t" * 200, description="d" * 10_000, max_attempts=100)
    assert len(task["title"]) == 200 and len(task["description"]) == 10_000


def test_unicode_and_big_payloads_round_trip(client: ApiClient, db) -> None:
    title = "Ünïcødé ✓ 漢字 🚀 \u200b zero-width, RTL \u202e"
    payload = {
        "big": 2**64 - 1,
        "neg": -(2**63),
        "float": 1.5e300,  # PostgreSQL writes it back as 301 digits
        "tiny": 5e-324,
        "emoji": "🙂",
        "nested": [[[[{"deep": [None, True, False]}]]]],
        "": "empty key",
    }
    task = create(client, title=title, payload=payload, description="é" * 10_000)
    fetched = client.get(f"/v1/tasks/{task['id']}").json()["data"]
    assert fetched["title"] == title
    assert fetched["payload"] == payload
    assert len(fetched["description"]) == 10_000


def test_deeply_nested_payload_is_handled(client: ApiClient) -> None:
    deep = b'{"title": "x", "payload": {"a": ' + b"[" * 99 + b"]" * 99 + b"}}"
    response = client.post("/v1/tasks", data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    assert client.get(response.headers["Location"]).status_code == 200
    deeper = b'{"title": "x", "payload": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}"
    details = rejected(client, deeper)
    assert "100 levels" in details["payload"]
    too_deep = b'{"title": "x", "payload": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    response = client.post("/v1/tasks", data=too_deep, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


# -- PUT -----------------------------------------------------------------------------------


def test_put_refuses_bad_fields_and_changes_nothing(client: ApiClient) -> None:
    task = create(client, title="before")
    path = f"/v1/tasks/{task['id']}"
    assert "body" in rejected(client, {}, "PUT", path)
    assert "title" in rejected(client, {"title": " "}, "PUT", path)
    assert "status" in rejected(client, {"status": "done"}, "PUT", path)
    assert "id" in rejected(client, {"id": 9, "title": "x"}, "PUT", path)
    assert "attempts" in rejected(client, {"attempts": 0}, "PUT", path)
    assert "body" in rejected(client, [1], "PUT", path)
    after = client.get(path).json()["data"]
    assert after == task


def test_put_can_clear_the_description(client: ApiClient) -> None:
    task = create(client, description="something")
    updated = client.put(f"/v1/tasks/{task['id']}", json={"description": None}).json()["data"]
    assert updated["description"] == ""


def test_put_of_queue_fields_while_pending(client: ApiClient) -> None:
    task = create(client)
    changes = {"type": "sleep", "payload": {"seconds": 1}, "max_attempts": 3,
               "run_at": "2031-05-05T05:05:05Z"}  # fmt: skip
    updated = client.put(f"/v1/tasks/{task['id']}", json=changes).json()["data"]
    assert (updated["type"], updated["payload"], updated["max_attempts"]) == (
        "sleep", {"seconds": 1}, 3
    )  # fmt: skip
    assert updated["run_at"].startswith("2031-05-05T05:05:05")


# run_at is RFC 3339 (flowforge/timestamps.py), not what fromisoformat reads: issue 22, 7.
NOT_RFC_3339 = [
    ("2026-01-01T00:00:00Z\u0000junk", "NUL"),  # 3.11's fromisoformat stopped at the NUL
    ("2026-01-01 00:00:00Z", "a T between"),
    ("2026-W01-1T00:00:00Z", "RFC 3339"),  # a week date
    ("2026-001T00:00:00Z", "RFC 3339"),  # an ordinal date
    ("20260101T000000Z", "RFC 3339"),  # the basic format
    ("2026-01-01T00:00Z", "RFC 3339"),  # no seconds
    ("2026-01-01T00:00:00,5Z", "RFC 3339"),
    ("2026-01-01T00:00:00.1234567891Z", "RFC 3339"),  # ten fractional digits
    ("2026-01-01T00:00:00+0100", "RFC 3339"),
    ("2026-01-01T00:00:00+01", "RFC 3339"),
    ("2026-01-01T00:00:00Z\n", "RFC 3339"),
    ("\uff12\uff10\uff12\uff16-01-01T00:00:00Z", "RFC 3339"),  # fullwidth digits
    ("2026-01-01T00:00:00 localtime", "RFC 3339"),
    ("2026-12-31T23:59:60Z", "leap second"),
    ("2026-02-30T00:00:00Z", "real time"),
    ("2026-01-01T24:00:00Z", "real time"),
    ("2026-01-01T00:00:00+24:00", "offset"),
]


@pytest.mark.parametrize(("run_at", "problem"), NOT_RFC_3339)
def test_run_at_must_be_rfc_3339_everywhere_it_is_taken(
    client: ApiClient, db, run_at: str, problem: str
) -> None:
    """POST, a batch's item and PUT share the one parser; nothing is stored or changed."""
    details = rejected(client, {"title": "ok", "run_at": run_at})
    assert problem in details["run_at"], details
    batch = rejected(client, {"tasks": [{"title": "ok"}, {"title": "ok", "run_at": run_at}]},
                     path="/v1/tasks/batch")  # fmt: skip
    assert set(batch) == {"tasks[1].run_at"} and problem in batch["tasks[1].run_at"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    task = create(client)
    put = rejected(client, {"run_at": run_at}, method="PUT", path=f"/v1/tasks/{task['id']}")
    assert problem in put["run_at"], put
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"] == task


@pytest.mark.parametrize(
    ("run_at", "stored"),
    [
        ("2030-01-01t10:00:00z", "2030-01-01T10:00:00Z"),  # RFC 3339 5.6's note: lower case
        ("2030-01-01T10:00:00-00:00", "2030-01-01T10:00:00Z"),  # "offset unknown": UTC
        ("2030-01-01T10:00:00.5+02:00", "2030-01-01T08:00:00.500000Z"),
        # seven (.NET) and nine (Go, Java) digits: kept to the microsecond, not rounded
        ("2030-01-01T10:00:00.9999999Z", "2030-01-01T10:00:00.999999Z"),
        ("2030-01-01T10:00:00.123456789-01:30", "2030-01-01T11:30:00.123456Z"),
    ],
)
def test_run_at_takes_what_rfc_3339_allows(client: ApiClient, run_at: str, stored: str) -> None:
    task = create(client, run_at=run_at)
    assert task["run_at"] == stored
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"]["run_at"] == stored


@pytest.mark.parametrize("queue", ["default\n", "mail\n"])
def test_a_queue_name_with_a_trailing_newline_is_400_not_500(
    client: ApiClient, db, queue: str
) -> None:
    """Python's `$` matches before a final newline, PostgreSQL's CHECK does not: "mail\\n"
    passed the API's check and failed the INSERT (a 500)."""
    details = rejected(client, {"title": "ok", "queue": queue})
    assert set(details) == {"queue"}
    batch = rejected(client, {"tasks": [{"title": "ok", "queue": queue}]}, path="/v1/tasks/batch")
    assert set(batch) == {"tasks[0].queue"}
    task = create(client)
    assert set(
        rejected(client, {"queue": queue}, method="PUT", path=f"/v1/tasks/{task['id']}")
    ) == {"queue"}
    error = assert_error(client.get("/v1/tasks", params={"queue": queue}), 400, "validation_failed")
    assert set(error["details"]) == {"queue"}
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
