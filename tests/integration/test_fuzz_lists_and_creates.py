"""The list and create paths under fuzzing (issue 22, deliver 3): no request is a 5xx, and
no request breaks a later one.

test_openapi.py fuzzes every route from the spec, but a spec can only say a cursor is "a
base64url string", and its examples go to a threaded server with a pool of connections,
so one that poisons its connection can pass unseen. Here hypothesis builds what the spec
cannot: cursors taken apart and put together again with any JSON in each part, keys that
reach SQL (ids up to 2^63-1, years 2 to 9998 at any offset), run_at strings near and far
from RFC 3339, bodies with NaN, huge numbers and unknown fields, raw query strings with
broken percent escapes. They go to ``flowforge api`` with ONE gunicorn worker, so every
request meets the kept connection (and its prepared statements) every earlier one left.
After each fuzzed request a known-good list of the same shape (the same filters and paging
style, legal values) and a known-good create must still answer 200 and 201.

Bounded and repeatable: a fixed number of examples, derandomized, no example database.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flowforge import pagination
from flowforge.domain.fields import POST_FIELDS
from flowforge.domain.validation import LIST_PARAMETERS

from ..support import Tokens, bearer, start_api, stop_api

EXAMPLES = 200
FILTER_VALUES = {"status": "pending", "type": "noop", "queue": "default"}


@dataclass(frozen=True)
class Fuzzed:
    """One request, and the shape of the known-good list that must work after it."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    good_filters: tuple[str, ...] = ()  # the filters the fuzzed list named
    good_cursor: bool = False  # and whether it paged by cursor


# -- strategies ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

OFFSETS = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ).map(lambda d: timedelta(minutes=d // timedelta(minutes=1))),
)
MOMENTS = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=OFFSETS
)


def _spellings(moment: datetime) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            moment.isoformat(),
            moment.isoformat(sep=" "),
            moment.isoformat(timespec="minutes"),
            moment.isoformat(timespec="microseconds") + "123",
            moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").lower(),
            moment.replace(tzinfo=None).isoformat(),
            moment.strftime("%G-W%V-%uT%H:%M:%S%z"),
            moment.strftime("%Y%m%dT%H%M%S%z"),
            moment.isoformat() + "\x00junk",
        ]
    )


def _mostly(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """About seven in eight draws a value the API takes, else anything: enough legal
    requests to reach the database in every shape, enough bad ones to find what a check
    misses. (Not one_of(valid, valid, valid, wild): hypothesis does not pick its branches
    evenly, the last came up far more than one time in four; it favours the ends of an
    integer range too, so the odd ones out sit in the middle.)"""
    return st.integers(0, 15).flatmap(lambda i: wild if i in (7, 8) else valid)


TIMESTAMPS = st.one_of(
    MOMENTS.map(datetime.isoformat),
    MOMENTS.flatmap(_spellings),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,12})?)?"
        r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?\Z"
    ),
    st.text(alphabet="0123456789-:TtZz+.W \x00", max_size=35),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _cursor(filters: tuple[str | None, ...]) -> st.SearchStrategy[str]:
    """A real cursor for these filters at any key (ids up to 2^63-1, years 2 to 9998 at
    any offset: all of it reaches SQL); or one put together from parts, each of its kind
    or any JSON, the array sometimes a part short or long; or any text."""
    triples = st.just(list(filters)) | st.lists(
        st.none() | st.sampled_from(list(FILTER_VALUES.values())), min_size=3, max_size=3
    )
    real = st.builds(
        lambda when, task_id: pagination.encode(pagination.Cursor(when, task_id, filters)),
        MOMENTS,
        st.integers(min_value=1, max_value=2**63 - 1),
    )
    parts = st.tuples(
        _mostly(st.just(1), JSON),
        _mostly(TIMESTAMPS, JSON),
        _mostly(st.integers(min_value=-(2**63), max_value=2**64 - 1), JSON),
        _mostly(triples, JSON),
    )
    # A real cursor with one part swapped for a value of another kind (an id of `true`
    # once reached SQL: "bigint < boolean", a 500, and the lists after it broken).
    swapped = st.builds(
        lambda when, task_id, part, value: _b64(
            json.dumps(
                [
                    value if i == part else v
                    for i, v in enumerate([1, when.isoformat(), task_id, list(filters)])
                ]
            ).encode()
        ),
        MOMENTS,
        st.integers(min_value=1, max_value=2**63 - 1),
        st.sampled_from([2, 0, 1, 3]),  # the id first: hypothesis favours the first
        st.one_of(
            st.booleans(),
            st.none(),
            st.floats(allow_nan=False),
            st.text(max_size=8),
            st.integers(),
            JSON,
        ),
    )
    made_up = parts.flatmap(lambda p: st.sampled_from([list(p), list(p[:3]), [*p, None]])).map(
        lambda raw: _b64(json.dumps(raw).encode())
    )
    text = st.text(alphabet=string.ascii_letters + string.digits + "-_=+/!%", max_size=60)
    return st.one_of(real, swapped, real, made_up, swapped, text)


WILD = st.text(max_size=12)
LIST_VALUES: dict[str, st.SearchStrategy[str]] = {
    "limit": _mostly(st.integers(1, 100).map(str), st.integers(-2, 200).map(str) | WILD),
    "status": _mostly(st.sampled_from(["pending", "failed"]), st.just("PENDING") | WILD),
    "type": _mostly(st.sampled_from(["noop", "sleep"]), st.text(max_size=110)),
    "queue": _mostly(
        st.sampled_from(["default", "mail"]), st.just("default\n") | st.text(max_size=70)
    ),
    "fields": _mostly(
        st.lists(st.sampled_from(["id", "title", "status", "created_at"]), min_size=1),
        st.lists(st.sampled_from(["bogus", "", " id"]) | WILD, max_size=3),
    ).map(",".join),
}
# Every parameter the list knows is fuzzed: one added to LIST_PARAMETERS must be added here.
assert {*LIST_VALUES, "page", "cursor"} == LIST_PARAMETERS
PAGES = _mostly(st.integers(1, 5).map(str), st.integers(-2, 2_000_000).map(str) | WILD)


@st.composite
def list_queries(draw: st.DrawFn) -> Fuzzed:
    """GET /v1/tasks: some filters and fields, a page, a cursor (of those filters or
    not), sometimes both, sometimes a parameter it does not know."""
    query: dict[str, str] = draw(st.fixed_dictionaries({}, optional=LIST_VALUES))
    paging = draw(st.sampled_from(["cursor", "first", "both", "page", "cursor"]))  # ends: likelier
    if paging in ("page", "both"):
        query["page"] = draw(PAGES)
    if paging in ("cursor", "both"):
        query["cursor"] = draw(_cursor(tuple(query.get(name) for name in FILTER_VALUES)))
    if draw(st.integers(0, 15)) == 7:
        query[draw(st.sampled_from(["bogus", "Status", "limit "]))] = draw(WILD)
    return Fuzzed(
        "GET",
        "/v1/tasks?" + urlencode(query),
        good_filters=tuple(name for name in FILTER_VALUES if name in query),
        good_cursor="cursor" in query,
    )


RAW_QUERIES = st.text(
    alphabet=string.ascii_letters + "=&%+;cursorlimitpagestatus0123456789fF", max_size=60
).map(lambda raw: Fuzzed("GET", "/v1/tasks?" + raw))

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "title": _mostly(st.just("fuzzed"), st.text(max_size=210)),
    "description": st.text(max_size=50) | st.none(),
    "type": _mostly(st.sampled_from(["noop", "sleep"]), st.text(max_size=10)),
    "payload": st.dictionaries(st.text(max_size=8), JSON, max_size=4),
    "max_attempts": _mostly(st.integers(1, 100), st.integers()),
    "run_at": TIMESTAMPS,
    "queue": _mostly(
        st.from_regex(r"\A[a-z0-9_-]{1,64}\Z"), st.just("mail\n") | st.text(max_size=70)
    ),
    "priority": _mostly(st.integers(-100, 100), st.integers()),
    "timeout": _mostly(st.integers(1, 86_400), st.integers() | st.floats()),
}
# Each field of POST's body may be there (the title mostly), of its kind or any JSON,
# beside fields the API does not take.
TASKS = _mostly(
    st.fixed_dictionaries(
        {"title": FIELD_VALUES["title"]},
        optional={
            name: _mostly(FIELD_VALUES[name], JSON) for name in sorted(POST_FIELDS - {"title"})
        },
    ),
    st.fixed_dictionaries(
        {}, optional={name: JSON for name in ("title", "status", "id", "bogus", "run_at")}
    ),
)
# NaN and the infinities: json.dumps writes them, they are not JSON, the API must say so.
NOT_JSON = st.builds(
    lambda x: {"title": "t", "payload": {"x": x}}, st.sampled_from([math.nan, math.inf, -math.inf])
)
# What requests can send as a header value (no surrounding blanks, no line breaks).
KEYS = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=210
).map(str.strip)


def _create_request(body: Any, key: str | None, batch: bool) -> Fuzzed:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return Fuzzed(
        "POST",
        "/v1/tasks/batch" if batch else "/v1/tasks",
        json.dumps(body).encode(),  # allow_nan: NaN and Infinity tokens reach the parser
        headers,
    )


CREATES = st.builds(
    _create_request, _mostly(TASKS, JSON | NOT_JSON), st.none() | KEYS, st.just(False)
)
BATCHES = st.builds(
    _create_request,
    _mostly(
        st.fixed_dictionaries({"tasks": st.lists(TASKS, min_size=1, max_size=4)}),
        JSON | st.fixed_dictionaries({"tasks": JSON}),
    ),
    st.none(),
    st.just(True),
)
REQUESTS = st.one_of(list_queries(), list_queries(), RAW_QUERIES, CREATES, CREATES, BATCHES)


# -- the server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_worker(
    database_url: str, api_tokens: Tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[requests.Session, Path]]:
    """``flowforge api`` with one gunicorn worker (one kept connection) on an empty table,
    a session with the write token; and its log."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE tasks, schedules, idempotency_keys RESTART IDENTITY")
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    proc, url = start_api(database_url, log, API_WORKERS="1")
    session = requests.Session()
    session.headers.update(bearer(api_tokens.write))
    base_request = session.request
    session.request = (  # type: ignore[method-assign]
        lambda method, path, *a, **kw: base_request(method, url + path, *a, timeout=30, **kw)
    )
    try:
        yield session, log
    finally:
        session.close()
        stop_api(proc)


def _good_list(
    api: requests.Session, filters: tuple[str, ...], by_cursor: bool, after: Fuzzed
) -> None:
    """A legal list of that shape answers 200; by cursor, the cursor of the page before."""
    query: dict[str, Any] = {name: FILTER_VALUES[name] for name in filters}
    first = api.get("/v1/tasks", params={**query, "limit": 1})
    assert first.status_code == 200, (after, first.text)
    cursor = first.json()["meta"]["next_cursor"]
    if by_cursor and cursor is not None:
        page = api.get("/v1/tasks", params={**query, "limit": 1, "cursor": cursor})
        assert page.status_code == 200, (after, page.text)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(request=REQUESTS)
def test_no_fuzzed_list_or_create_is_a_5xx_or_breaks_the_next(
    one_worker: tuple[requests.Session, Path], request: Fuzzed
) -> None:
    api, log = one_worker
    response = api.request(request.method, request.path, data=request.body, headers=request.headers)
    # What was sent and answered, in --hypothesis-show-statistics.
    event(f"{request.method} {request.path.split('?')[0]} {response.status_code}")
    assert response.status_code < 500, (request, response.text, log.read_text()[-2000:])
    assert response.headers["Content-Type"].startswith("application/json"), (request, response.text)
    assert set(orjson.loads(response.content)) == {"data", "error"} | (
        {"meta"} if response.status_code == 200 and request.method == "GET" else set()
    )
    # Whatever that request did to the worker's connection, these still work.
    _good_list(api, request.good_filters, request.good_cursor, request)
    good = {"title": "known good", "type": "noop", "queue": "default"}
    created = api.post("/v1/tasks", json=good)
    assert created.status_code == 201, (request, created.text, log.read_text()[-2000:])
