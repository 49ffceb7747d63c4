"""The configuration's reference is made from config.VARIABLES, never written twice:
deploy/systemd/flowforge.env.example and docs/configuration.md's table are what
``flowforge config --format env|markdown`` prints, and the Ansible role's env templates
set only variables FlowForge reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flowforge.cli.config import (
    CONFIGURATION_PAGE,
    ENV_EXAMPLE,
    TABLE_BEGIN,
    TABLE_END,
    render_env,
    render_markdown,
)
from flowforge.config import VARIABLES

from ..support import FLOWFORGE, ROOT, service_env

TEMPLATES = ROOT / "deploy" / "ansible" / "roles" / "flowforge" / "templates"


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLOWFORGE, *args], env=env, capture_output=True, text=True, timeout=60)


def _no_database_env() -> dict[str, str]:
    return {k: v for k, v in service_env("x").items() if k != "DATABASE_URL"}


def test_env_example_is_made_from_the_variables() -> None:
    assert (ROOT / ENV_EXAMPLE).read_text() == render_env(), (
        f"{ENV_EXAMPLE} is stale: run `.venv/bin/flowforge config --format env --write "
        f"{ENV_EXAMPLE}` (and change a variable's text in src/flowforge/config/variables.py, "
        "not there)"
    )


def test_configuration_page_table_is_made_from_the_variables() -> None:
    page = (ROOT / CONFIGURATION_PAGE).read_text()
    begin, end = page.index(TABLE_BEGIN), page.index(TABLE_END) + len(TABLE_END) + 1
    assert page[begin:end] == render_markdown(), (
        f"{CONFIGURATION_PAGE}'s table is stale: run `.venv/bin/flowforge config --format "
        f"markdown --write {CONFIGURATION_PAGE}` (and change a variable's text in "
        "src/flowforge/config/variables.py, not there)"
    )


def test_every_variable_is_one_row_with_its_default() -> None:
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", render_markdown(), re.MULTILINE)
    assert [name for name, _ in rows] == [v.name for v in VARIABLES]
    for (_, default), var in zip(rows, VARIABLES, strict=True):
        if var.default and var.default_text is None:
            assert default.strip() == f"`{var.default}`", var.name


@pytest.mark.parametrize(("form", "render"), [("env", render_env), ("markdown", render_markdown)])
def test_the_reference_needs_no_configuration(form: str, render) -> None:
    """The reference is the same whatever the environment holds (no DATABASE_URL here, a
    bad one there): it documents the variables, not this host's values."""
    for env in (_no_database_env(), service_env("x", API_PORT="nonsense")):
        out = _run("config", "--format", form, env=env)
        assert (out.returncode, out.stderr) == (0, "")
        assert out.stdout == render()


def test_write_replaces_the_table_and_keeps_the_prose(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    text = (ROOT / CONFIGURATION_PAGE).read_text()
    start = text.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    page.write_text(text[:start] + "\n| stale | row |\n" + text[text.index(TABLE_END) :])
    out = _run("config", "--format", "markdown", "--write", str(page), env=_no_database_env())
    assert out.returncode == 0, out.stderr
    assert page.read_text() == text

    env_file = tmp_path / "flowforge.env"
    out = _run("config", "--format", "env", "--write", str(env_file), env=_no_database_env())
    assert out.returncode == 0 and env_file.read_text() == render_env()


def test_write_refuses_a_page_without_markers_and_text_or_json(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    shutil.copy(ROOT / "README.md", page)
    out = _run("config", "--format", "markdown", "--write", str(page), env=_no_database_env())
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "marker" in out.stderr
    assert page.read_text() == (ROOT / "README.md").read_text()
    out = _run("config", "--json", "--write", str(page), env=_no_database_env())
    assert out.returncode == 2 and "--write needs --format env" in out.stderr


@pytest.mark.parametrize("template", ["flowforge.env.j2", "migrate.env.j2"])
def test_ansible_env_templates_set_only_variables_flowforge_reads(template: str) -> None:
    text = (TEMPLATES / template).read_text()
    names = re.findall(r"^([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)
    assert names, template
    assert sorted(set(names) - {v.name for v in VARIABLES}) == []
    assert len(names) == len(set(names)), "a variable set twice: the second line wins"
