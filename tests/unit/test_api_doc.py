"""docs/api.md states the limits and defaults a client relies on; each is defined once in
the code (the field table, the list and batch rules, the configuration's defaults, the
state machine). The page keeps its own sentences, and this holds every figure in them to
its source: change a limit and this fails until the page says the new one."""

from __future__ import annotations

import inspect
import re

import pytest

from flowforge.api import envelope, inputs
from flowforge.api.auth import TokenCache
from flowforge.config import VARIABLES
from flowforge.domain import fields, states, validation
from flowforge.domain.states import Actor, Status
from flowforge.stores import tasks_sql

from ..support import ROOT

# Line breaks and runs of blanks fold to one space: the page wraps where it likes.
PAGE = " ".join((ROOT / "docs" / "api.md").read_text().split())
DEFAULTS = {v.name: v.default for v in VARIABLES}


def _repeat_max(pattern: re.Pattern[str]) -> int:
    """The N of a pattern's one ``{1,N}``: the longest value it takes."""
    (found,) = re.findall(r"\{1,(\d+)\}", pattern.pattern)
    return int(found)


def _seconds(default: str | None) -> str:
    assert default is not None and re.fullmatch(r"\d+s", default), default
    return f"{default[:-1]} s"


def _cache_seconds(name: str) -> str:
    seconds = inspect.signature(TokenCache).parameters[name].default
    assert seconds == int(seconds)
    return f"{int(seconds)} seconds"


def _hours(interval: str) -> str:
    found = re.fullmatch(r"interval '(\d+) hours'", interval)
    assert found, interval
    return found[1]


def _mib(default: str | None) -> str:
    assert default is not None and int(default) % (1024 * 1024) == 0, default
    return f"{int(default) // (1024 * 1024)} MiB"


def _retry_phrases() -> list[str]:
    again = "/".join(states.sources(Actor.RETRY, table_order=True))
    refused = [s for s in Status if s not in states.RETRYABLE]
    return [f"200 {again} -> `pending`", f"409 {states.spoken(refused)}"]


def _cancel_phrases() -> list[str]:
    ((now, cancelled),) = {(a, b) for a, b in states.moves(Actor.CANCEL) if a != b}
    assert set(Status) - set(states.CANCELLABLE) <= states.TERMINAL  # "already finished"
    return [f"200 {now} -> `{cancelled}`", "409 already finished"]


# Each sentence (or its part) of the page, written from the value it states.
PHRASES = [
    # the task fields and their defaults (domain/fields.py)
    f"`title` (required, 1-{fields.TITLE_MAX} characters)",
    f"`description` (up to {fields.DESCRIPTION_MAX:,})",
    f"`max_attempts` (1-{fields.ATTEMPTS_MAX}, default",
    f"`queue` (`{fields.QUEUE_REGEX.strip('^$')}`, default `{fields.DEFAULT_QUEUE}`;",
    f"`priority` ({fields.PRIORITY_MIN}..{fields.PRIORITY_MAX}, "
    f"default {fields.DEFAULT_PRIORITY}: higher runs first",
    f"(1..{fields.TIMEOUT_MAX:,}, default `TASK_TIMEOUT`)",
    f"a payload nested deeper than {fields.PAYLOAD_DEPTH_MAX} levels",
    f"an IANA name, default {fields.DEFAULT_TIMEZONE};",
    # lists, batches, keys (domain/validation.py, the stores, the API's inputs)
    f"`limit` 1..{validation.PAGE_LIMIT_MAX} ({validation.PAGE_LIMIT_DEFAULT})",
    f"(`total` is counted up to {tasks_sql.EXACT_TOTAL_MAX:,} and PostgreSQL's estimate",
    f"up to {validation.BATCH_MAX:,} tasks in one request",
    f"Idempotency-Key (1-{_repeat_max(inputs._IDEMPOTENCY_KEY)} printable ASCII)",
    f"within {_hours(tasks_sql.IDEMPOTENCY_TTL)} h answers 200 with the first task",
    f"at most {_repeat_max(envelope._SANE_REQUEST_ID)} characters of `A-Z a-z 0-9 . _ : @ / + = -`",
    # the configuration's defaults (config.VARIABLES) and the token cache's
    f"413 over {_mib(DEFAULTS['API_MAX_BODY'])}",
    f"`API_READ_TIMEOUT` ({_seconds(DEFAULTS['API_READ_TIMEOUT'])})",
    f"at most `TASK_ATTEMPTS_KEPT` ({DEFAULTS['TASK_ATTEMPTS_KEPT']}) per task",
    f"remembers a verified token for {_cache_seconds('ttl')}",
    f"and a refused one for {_cache_seconds('negative_ttl')}",
    # the state machine (domain/states.py)
    *_retry_phrases(),
    *_cancel_phrases(),
    f"a `{Status.FAILED}` one back to `{Status.PENDING}`",
]


@pytest.mark.parametrize("phrase", PHRASES)
def test_the_api_page_states_what_the_code_enforces(phrase: str) -> None:
    assert phrase in PAGE, f"docs/api.md no longer says {phrase!r}: say the source's value"


def test_a_put_may_only_make_the_moves_the_page_names() -> None:
    # "Through PUT a client may claim a pending task (`processing`) and put a `failed` one
    # back to `pending`": every move PUT allows, and nothing else.
    assert {
        (Status.PENDING, Status.PROCESSING),
        (Status.FAILED, Status.PENDING),
    } == states.CLIENT_TRANSITIONS
    assert "claim a pending task (`processing`)" in PAGE
