"""The migrations form one numbered line: file NNNN_*.py holds revision "NNNN", revised
from NNNN-1. Several people adding a migration at once each take the next free number;
whoever lands second must renumber (two files 0012 landed apart once, and only a
rebase caught it): this fails before the landing does."""

from __future__ import annotations

import ast
from pathlib import Path

from ..support import ROOT

VERSIONS = ROOT / "migrations" / "versions"


def _assigned(path: Path, name: str) -> str | None:
    for node in ast.parse(path.read_text()).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} assigns no {name}")


def test_revisions_are_numbered_in_one_line_by_their_files() -> None:
    files = sorted(VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert files, "no migrations found"
    numbers = [f.name[:4] for f in files]
    assert len(set(numbers)) == len(numbers), f"two migrations share a number: {numbers}"
    assert numbers == [f"{n:04d}" for n in range(1, len(files) + 1)], numbers
    for previous, path in zip([None, *numbers], files, strict=False):
        assert _assigned(path, "revision") == path.name[:4], path.name
        assert _assigned(path, "down_revision") == previous, path.name
        header = path.read_text()
        assert f"Revision ID: {path.name[:4]}" in header, path.name
        assert previous is None or f"Revises: {previous}" in header, path.name
