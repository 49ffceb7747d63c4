"""Rules the package's source keeps, read from the files themselves."""

from __future__ import annotations

import ast
from collections import Counter

import pytest

from ..support import ROOT

MODULES = sorted((ROOT / "src" / "flowforge").rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT / "src")))
def test_no_module_defines_a_name_twice(path) -> None:
    """A second ``def`` of a name silently replaces the first (config.py had two
    ``_non_negative_int``, and only the second ran)."""
    tree = ast.parse(path.read_text(), str(path))
    defined = Counter(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )
    assert [name for name, n in defined.items() if n > 1] == []
