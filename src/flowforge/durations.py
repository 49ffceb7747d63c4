"""The one duration syntax (``500ms``, ``5s``, ``2m``, ``1h``, ``1d``, ``2w``), read and written.

Settings, script options and every report of a wait or an age go through here, so a
duration reads the same wherever FlowForge prints or takes one.
"""

from __future__ import annotations

import re
from typing import Literal

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

Style = Literal["exact", "units", "decimal"]


def parse_duration(text: str) -> float:
    """Parse ``500ms``, ``5s``, ``2m``, ``1h``, ``1d`` or ``2w`` into seconds (a float)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"expected a duration such as 500ms, 5s, 2m, 1h or 1d, got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float, style: Style = "exact") -> str:
    """Seconds in the units ``parse_duration`` reads, in one of three styles:

    - ``exact``, as a setting is written: the largest unit that holds it whole (``600.0``
      -> ``10m``, ``0.5`` -> ``500ms``); ``parse_duration`` reads it back.
    - ``units``, for a report's sentence: the two largest whole units (``93784`` -> ``1d 2h``,
      ``3600`` -> ``1h``).
    - ``decimal``, for a table's column: the largest unit reached, to a tenth (``7200`` ->
      ``2.0h``, ``90`` -> ``1.5m``).

    An age under a minute reads ``5.2s`` in the last two; a negative one reads as zero.
    """
    if style == "exact":
        for unit in ("w", "d", "h", "m", "s", "ms"):
            count = seconds / _UNIT_SECONDS[unit]
            if count >= 1 and abs(count - round(count)) < 1e-9:
                return f"{round(count)}{unit}"
        return f"{seconds:g}s"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if style == "decimal":
        unit = next(u for u in ("d", "h", "m") if seconds >= _UNIT_SECONDS[u])
        return f"{seconds / _UNIT_SECONDS[unit]:.1f}{unit}"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            count = int(seconds // size)
            seconds -= count * size
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])
