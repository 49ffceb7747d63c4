"""The HTTP API (``flowforge api``): a Bottle app served by gunicorn.

Its modules are listed in CONTRIBUTING.md (the one file map).

Nothing is imported here: ``flowforge api`` must set prometheus-client's multiprocess
directory before ``metrics`` is first imported.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":  # flowforge.api.create_app, imported when first asked for
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
