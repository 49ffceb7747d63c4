"""``flowforge config``: the effective configuration (secrets hidden), or the reference of
every variable made from ``config.VARIABLES``: deploy/systemd/flowforge.env.example
(``--format env``) and the table of docs/configuration.md (``--format markdown``)."""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from pathlib import Path

from ..config import AUTH_MODES, ISOLATIONS, LOG_FORMATS, LOG_LEVELS, VARIABLES, Variable
from .common import EXIT_CONFIG, CommandError, describe, settings

ENV_EXAMPLE = "deploy/systemd/flowforge.env.example"
CONFIGURATION_PAGE = "docs/configuration.md"
# The Markdown table sits between these two lines of the page; the prose around it is
# written by hand.
TABLE_BEGIN = (
    "<!-- The table is made from config.VARIABLES: "
    f"flowforge config --format markdown --write {CONFIGURATION_PAGE} -->"
)
TABLE_END = "<!-- end of the table made from config.VARIABLES -->"

ENV_HEADER = f"""\
# FlowForge environment file: systemd reads it through EnvironmentFile= in every unit.
# Install as /etc/flowforge/flowforge.env, mode 0640, owner root, group flowforge (it holds
# the database password). The Ansible role writes it from variables; by hand, copy this file.
# Every variable FlowForge reads is listed; a commented line shows the default. Durations
# read 500ms, 5s, 2m, 1h, 1d.
# Made from config.VARIABLES: change a variable's text there, not here, then run
#   flowforge config --format env --write {ENV_EXAMPLE}
"""

# Help that starts with one of a variable's values keeps its case ("token: ...", "json ...").
_VALUES = frozenset((*AUTH_MODES, *ISOLATIONS, *LOG_FORMATS, *LOG_LEVELS))
# A variable's name in running text, not inside a longer word or code (flowforge_env_extra.X).
_NAMES = re.compile(r"(?<![\w.=`])(" + "|".join(v.name for v in VARIABLES) + r")(?![\w=`])")


HELP = "print the effective configuration (secrets hidden)"
# With an epilog, the help is printed as laid out (the raw formatter): wrapped here.
DESCRIPTION = (
    textwrap.fill(
        "Print the effective configuration: every variable FlowForge reads from the "
        "environment, secrets hidden.",
        79,
    )
    + "\n\n"
    + textwrap.fill(
        "--format env or markdown prints instead the reference of every variable, "
        f"whatever the environment holds: {ENV_EXAMPLE} and the table of "
        f"{CONFIGURATION_PAGE} are made so.",
        79,
    )
)
EPILOG = "variables (default in brackets):\n" + describe(VARIABLES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="as JSON (--format json)")
    output.add_argument(
        "--format",
        choices=("text", "json", "env", "markdown"),
        default="text",
        help="text (the default) or json: the values; env or markdown: the reference",
    )
    parser.add_argument(
        "--write",
        metavar="FILE",
        help="with --format env: write FILE; with --format markdown: replace the table "
        "between the two marker lines of FILE",
    )


def run(args: argparse.Namespace) -> int:
    form = "json" if args.json else args.format
    if args.write and form not in ("env", "markdown"):
        raise CommandError("--write needs --format env or --format markdown", EXIT_CONFIG)
    if form in ("env", "markdown"):
        text = render_env() if form == "env" else render_markdown()
        if args.write:
            _write(Path(args.write), text, whole=form == "env")
        else:
            print(text, end="")
        return 0
    return _show(as_json=form == "json")


def _show(*, as_json: bool) -> int:
    shown = settings(require=()).redacted()
    missing = [v.name for v in VARIABLES if v.default is None and not shown.get(v.name)]
    if as_json:
        print(json.dumps({k: None if k in missing else v for k, v in shown.items()}, indent=2))
    else:
        width = max(len(v.name) for v in VARIABLES)
        for name, value in shown.items():
            print(f"{name:<{width}}  {'(required, not set)' if name in missing else value}")
    if missing:
        raise CommandError(f"configuration: {', '.join(missing)}: required but not set",
                           EXIT_CONFIG)  # fmt: skip
    return 0


def _meaning(var: Variable) -> str:
    """The help and the notes, as sentences."""
    text = var.help
    if text.split(maxsplit=1)[0].rstrip(":,") not in _VALUES:
        text = text[0].upper() + text[1:]
    return text + "." + (f" {var.notes}." if var.notes else "")


def render_env() -> str:
    """deploy/systemd/flowforge.env.example: each variable's meaning, then its line (the
    default commented out; a required one set to its example)."""
    blocks = [ENV_HEADER]
    for var in VARIABLES:
        lines = textwrap.wrap(_meaning(var), 90, initial_indent="# ", subsequent_indent="# ",
                              break_on_hyphens=False, break_long_words=False)  # fmt: skip
        if var.default is None:
            lines += ["# Required.", f"{var.name}={var.example or ''}"]
        elif var.default_text is not None:
            lines.append(f"#{var.name}=<{var.default_text}>")
        else:
            lines.append(f"#{var.name}={var.default}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def render_markdown() -> str:
    """The table of docs/configuration.md, between its marker lines."""
    rows = [TABLE_BEGIN, "", "| variable | default | meaning |", "|---|---|---|"]
    for var in VARIABLES:
        if var.default is None:
            default = "required"
        elif var.default_text is not None:
            default = var.default_text
        else:
            default = f"`{var.default}`" if var.default else "empty"
        # | ends a cell, even in code; <token> would be read as an HTML tag.
        meaning = _NAMES.sub(r"`\1`", _meaning(var)).replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{var.name}` | {default} | {meaning} |")
    return "\n".join([*rows, "", TABLE_END]) + "\n"


def _write(path: Path, text: str, *, whole: bool) -> None:
    if not whole:
        try:
            page = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--write {path}: {exc.strerror}") from None
        begin, end = page.find(TABLE_BEGIN), page.find(TABLE_END)
        if begin < 0 or end < begin:
            raise CommandError(f"--write {path}: no marker lines {TABLE_BEGIN!r} and "
                               f"{TABLE_END!r} to put the table between", EXIT_CONFIG)  # fmt: skip
        text = page[:begin] + text + page[end + len(TABLE_END) + 1 :]
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"--write {path}: {exc.strerror}") from None
