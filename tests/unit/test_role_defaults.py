"""Each Ansible role's variables are written twice, in defaults/main.yml (what Ansible uses)
and meta/argument_specs.yml (what it checks at role start, and the documentation). This
holds the two equal: the same names, every name typed and described, and every literal
default repeated in the spec with the same value (a templated default is computed from
other variables, so the spec describes it instead of repeating a value that can be wrong).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "deploy" / "ansible" / "roles"
ROLE_DIRS = sorted(p for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())


def _load(role: Path) -> tuple[dict, dict]:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return defaults, specs["argument_specs"]["main"].get("options", {})


def test_every_role_is_checked() -> None:
    assert {p.name for p in ROLE_DIRS} >= {"flowforge", "nginx", "postgresql", "balancer"}


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role: Path) -> None:
    defaults, options = _load(role)
    assert sorted(set(defaults) - set(options)) == [], "in defaults/main.yml, not in the specs"
    assert sorted(set(options) - set(defaults)) == [], "in the specs, not in defaults/main.yml"
    for name, option in options.items():
        assert option.get("type"), f"{name}: no type in argument_specs.yml"
        assert option.get("description"), f"{name}: no description in argument_specs.yml"
        assert name.startswith(f"{role.name}_"), f"{name}: not prefixed with the role's name"
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            assert "default" not in option, f"{name}: a literal default for a templated one"
        else:
            assert "default" in option, f"{name}: its default {value!r} is not in the specs"
            assert option["default"] == value, f"{name}: {option['default']!r} != {value!r}"
