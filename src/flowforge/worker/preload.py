"""Imported once by the worker's fork server, before it forks handler processes: the
handlers (built-ins and plug-ins) are loaded there once, and every child starts with them
already imported instead of scanning entry points and importing plug-ins itself."""

from __future__ import annotations

from ..handlers import load_handlers

HANDLERS = load_handlers()
