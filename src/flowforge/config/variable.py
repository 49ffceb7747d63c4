"""``Variable``: what the table of environment variables (variables.py, with the worker's in
worker_variables.py) says of each one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, parser, default and meaning.

    ``help`` is the short meaning (``--help``, ``flowforge config``); the reference made from
    this table (deploy/systemd/flowforge.env.example and docs/configuration.md, by
    ``flowforge config --format env|markdown``) adds ``notes`` after it.
    """

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None  # None: required
    help: str
    secret: bool = False
    notes: str = ""  # sentences for the reference: advice, units, what it must stay below
    default_text: str | None = None  # the reference's words for a default computed per host
    example: str | None = None  # a required variable's value in the env example
