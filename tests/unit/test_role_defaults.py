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


def test_shared_facts_are_declared_once_and_match_the_service() -> None:
    # The roles take the database's cluster and where FlowForge answers from the
    # flowforge_database and flowforge_endpoints roles; those equal the services' own
    # defaults (config.VARIABLES), which the roles write into flowforge.env.
    from flowforge.config import VARIABLES

    service = {v.name: v.default for v in VARIABLES}
    endpoints, _ = _load(ROLES / "flowforge_endpoints")
    assert endpoints["flowforge_endpoints_api_host"] == service["API_HOST"]
    assert str(endpoints["flowforge_endpoints_api_port"]) == service["API_PORT"]
    assert (
        str(endpoints["flowforge_endpoints_worker_metrics_port"]) == service["WORKER_METRICS_PORT"]
    )
    nginx, _ = _load(ROLES / "nginx")
    assert f"get('API_MAX_BODY', {service['API_MAX_BODY']})" in nginx["nginx_client_max_body_size"]
    endpoints_role, database_role = "flowforge_endpoints", "flowforge_database"
    for role, name, declared_by, shared in (
        ("flowforge", "flowforge_api_port", endpoints_role, "api_port"),
        ("flowforge", "flowforge_worker_metrics_port", endpoints_role, "worker_metrics_port"),
        ("nginx", "nginx_https_port", endpoints_role, "https_port"),
        ("balancer", "balancer_backend_port", endpoints_role, "https_port"),
        ("monitoring", "monitoring_api_port", endpoints_role, "https_port"),
        ("monitoring", "monitoring_worker_metrics_port", endpoints_role, "worker_metrics_port"),
        ("backup", "backup_postgresql_port", database_role, "port"),
        ("backup", "backup_postgresql_version", database_role, "postgresql_version"),
        ("backup", "backup_postgresql_data_dir", database_role, "data_dir"),
        ("postgresql", "postgresql_version", database_role, "postgresql_version"),
    ):
        defaults, _ = _load(ROLES / role)
        assert defaults[name] == f"{{{{ {declared_by}_{shared} }}}}", f"{role}: {name} restated"
        meta = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())
        assert {"role": declared_by} in meta["dependencies"], f"{role} needs {declared_by}"
