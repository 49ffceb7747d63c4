"""Each fact of the domain is written once (flowforge.domain) or checked against it here:
the queue-name rule, the status list (the dashboard's too), and patterns that must match
a value whole (``$`` alone also matches before a final newline)."""

from __future__ import annotations

import json
import re

import bottle
import pytest

from flowforge import config, tokens
from flowforge.api import envelope, inputs
from flowforge.domain import fields
from flowforge.domain.states import STATUSES
from flowforge.domain.validation import ValidationError

from ..support import ROOT

SRC = ROOT / "src" / "flowforge"


def test_the_queue_name_rule_is_written_once() -> None:
    written = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if fields.QUEUE_REGEX in p.read_text() or "[a-z0-9_-]{1,64}$" in p.read_text()
    ]
    assert written == ["domain/fields.py"]


def test_the_dashboard_knows_the_statuses_of_the_state_machine() -> None:
    script = (SRC / "web" / "static" / "dashboard.js").read_text()
    (listed,) = re.findall(r"^const STATUSES = (\[.*\]);$", script, re.M)
    assert tuple(json.loads(listed)) == STATUSES


def test_the_settings_defaults_are_the_field_tables() -> None:
    settings = config.load_settings({"DATABASE_URL": "postgresql://localhost/x"})
    assert settings.task_timeout == fields.DEFAULT_TIMEOUT
    assert settings.task_max_attempts == fields.DEFAULT_MAX_ATTEMPTS


def test_a_final_newline_is_not_part_of_a_token_name() -> None:
    assert tokens.check_name("ops") == "ops"
    with pytest.raises(tokens.TokenError):
        tokens.check_name("ops\n")
    assert not tokens.plausible(tokens.new_token() + "\n")


def test_a_request_id_with_a_final_newline_is_replaced() -> None:
    assert envelope.request_id_from("abc-123") == "abc-123"
    assert envelope.request_id_from("abc-123\n") != "abc-123\n"


def test_an_idempotency_key_with_a_final_newline_is_refused() -> None:
    bottle.request.bind({"HTTP_IDEMPOTENCY_KEY": "key-1"})
    assert inputs.idempotency_key() == "key-1"
    bottle.request.bind({"HTTP_IDEMPOTENCY_KEY": "key-1\n"})
    with pytest.raises(ValidationError):
        inputs.idempotency_key()
