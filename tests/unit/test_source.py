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


# Limits a reader can hold (issue 29): a module of at most MODULE_LINES lines, a function of
# at most FUNCTION_LINES (from its ``def`` to its last line). What is still over them is
# named below with its size when it was listed (for the reader: not checked); the lists can
# only shrink: nothing else may go over, and an entry under the limit (or gone) fails too, so
# that it is taken off when its split lands.
MODULE_LINES = 400
FUNCTION_LINES = 60
LONG_MODULES: dict[str, int] = {}
LONG_FUNCTIONS: dict[str, int] = {}
PACKAGE = ROOT / "src" / "flowforge"


def _name(path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _functions(path) -> dict[str, int]:
    """Every function and method in ``path`` (nested ones too, by their dotted names) and
    its length in lines."""
    sizes: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    sizes[f"{_name(path)}:{name}"] = child.end_lineno - child.lineno + 1
                walk(child, f"{name}.")

    walk(ast.parse(path.read_text(), str(path)), "")
    return sizes


def test_no_module_is_over_the_limit() -> None:
    over = {
        _name(path): n
        for path in MODULES
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert sorted(set(over) - set(LONG_MODULES)) == [], f"over {MODULE_LINES} lines: split it"
    assert sorted(set(LONG_MODULES) - set(over)) == [], "no longer long: take it off the list"


def test_no_function_is_over_the_limit() -> None:
    over = {
        name: n for path in MODULES for name, n in _functions(path).items() if n > FUNCTION_LINES
    }
    assert sorted(set(over) - set(LONG_FUNCTIONS)) == [], f"over {FUNCTION_LINES} lines"
    assert sorted(set(LONG_FUNCTIONS) - set(over)) == [], "no longer long: take it off the list"
