"""What an attempt records of a handler's exception: the bounded traceback, Discard and
Snooze (no database: execute.run_handler on plain handlers)."""

from __future__ import annotations

import pytest

from flowforge.handlers import Discard, Snooze, TaskContext
from flowforge.worker.execute import TRACEBACK_LIMIT, bounded_traceback, run_handler


def _run(handler):
    return run_handler({"t": handler}, TaskContext(1, "t", {}, 1, 3, None))


def test_a_short_traceback_is_kept_whole_and_a_long_one_keeps_both_ends() -> None:
    assert bounded_traceback("Traceback\n  line\nValueError: x\n") == (
        "Traceback\n  line\nValueError: x\n"
    )
    text = "Traceback (most recent call last):\n" + "é" * 20_000 + "\nValueError: the end"
    cut = bounded_traceback(text)
    assert len(cut.encode()) <= TRACEBACK_LIMIT
    assert cut.startswith("Traceback (most recent call last):")
    assert cut.endswith("\nValueError: the end")
    assert "bytes of the traceback cut ...]" in cut
    assert bounded_traceback("a\x00b") == "a\\0b"  # storable as PostgreSQL text


def test_a_failure_records_its_traceback_with_the_handlers_line() -> None:
    def handler(task):
        raise KeyError("text")

    error, result, _, detail = _run(handler)
    assert error == "KeyError: 'text'" and result is None
    assert detail is not None and detail.kind is None
    assert f'"{__file__}", line' in detail.traceback and "in handler" in detail.traceback


def test_discard_fails_and_snooze_is_no_error() -> None:
    def discard(task):
        raise Discard("no text")

    def snooze(task):
        raise Snooze(2.5)

    error, _, _, detail = _run(discard)
    assert (error, detail.kind) == ("Discard: no text", "discarded") and detail.traceback
    error, _, _, detail = _run(snooze)
    assert (error, detail.kind, detail.delay, detail.traceback) == (None, "snoozed", 2.5, None)
    assert _run(lambda task: None)[3] is None  # a success records nothing more


@pytest.mark.parametrize("seconds", [-1, float("nan"), 31 * 86400, "5", True])
def test_snooze_refuses_what_is_not_a_delay(seconds) -> None:
    with pytest.raises((TypeError, ValueError)):
        Snooze(seconds)
