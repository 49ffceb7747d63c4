"""Files that ship beside the code: ``migrations/`` and ``openapi.yaml``.

In a wheel they sit inside the package (pyproject's force-include); in a source checkout
(an editable install) they sit at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_path(name: str) -> Path:
    """Where ``name`` is: inside the installed package, else in the source checkout."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} is missing from the flowforge installation")
