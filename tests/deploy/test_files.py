"""Fast checks of the deployment files (no host needed): unit hardening scores, the env
example against config.VARIABLES, ansible-lint, the Vagrantfile, the single unit source."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flowforge.config import VARIABLES

from .conftest import ANSIBLE_DIR, REPO, clean_env

SYSTEMD_DIR = REPO / "deploy" / "systemd"
LONG_RUNNING = ("flowforge-api.service", "flowforge-worker.service", "flowforge-worker@.service")


def _env_example() -> dict[str, str]:
    """NAME -> value of each (commented or not) assignment in flowforge.env.example."""
    text = (SYSTEMD_DIR / "flowforge.env.example").read_text()
    return dict(re.findall(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


def test_env_example_documents_every_variable_with_its_default() -> None:
    documented = _env_example()
    assert list(documented) == [v.name for v in VARIABLES]
    for var in VARIABLES:
        if var.default is not None and var.name != "API_WORKERS":  # that one is per host
            assert documented[var.name] == var.default, var.name
    # the required one is set, and to a URL the code accepts
    text = (SYSTEMD_DIR / "flowforge.env.example").read_text()
    assert re.search(r"^DATABASE_URL=postgresql://", text, re.MULTILINE)


SANDBOX = SYSTEMD_DIR / "flowforge-.service.d" / "sandbox.conf"
SERVICES = (*LONG_RUNNING, "flowforge-migrate.service")


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_with_the_shared_sandbox_scores_at_most_1_5_offline(unit: str, tmp_path: Path) -> None:
    # --offline scores the files without a running systemd; with --root it reads the unit
    # as the role installs it, drop-in directories included (flowforge-.service.d/ applies
    # to every flowforge-*.service). A template is scored through an instance name.
    system = tmp_path / "etc" / "systemd" / "system"
    (system / "flowforge-.service.d").mkdir(parents=True)
    (system / unit).write_text((SYSTEMD_DIR / unit).read_text())
    (system / "flowforge-.service.d" / "sandbox.conf").write_text(SANDBOX.read_text())

    def score() -> float:
        out = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", f"--root={tmp_path}",
             "--no-pager", unit.replace("@.", "@1.")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
        assert match, out.stdout + out.stderr
        return float(match.group(1))

    with_sandbox = score()
    print(f"\nsystemd-analyze security --offline=true {unit} + sandbox.conf: {with_sandbox}")
    assert with_sandbox <= 1.5
    # the score is the drop-in's: without it the unit is unsandboxed (the one source)
    (system / "flowforge-.service.d" / "sandbox.conf").unlink()
    assert score() > 5


def test_units_leave_the_sandbox_to_the_drop_in() -> None:
    directives = {
        line.split("=", 1)[0]
        for line in SANDBOX.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert {"ProtectSystem", "SystemCallFilter", "PrivateUsers"} <= directives
    for unit in SERVICES:
        keys = {
            line.split("=", 1)[0]
            for line in (SYSTEMD_DIR / unit).read_text().splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert keys & directives == set(), unit


def test_units_stop_gracefully_after_the_code_does() -> None:
    """TimeoutStopSec stays above the code's own drain times (defaults in config.py)."""
    defaults = {v.name: v.default for v in VARIABLES}
    seconds = {"API_GRACEFUL_TIMEOUT": 0, "WORKER_SHUTDOWN_TIMEOUT": 0}
    for name in seconds:
        seconds[name] = int(defaults[name].rstrip("s"))
    for unit, drain in (
        ("flowforge-api.service", seconds["API_GRACEFUL_TIMEOUT"]),
        ("flowforge-worker.service", seconds["WORKER_SHUTDOWN_TIMEOUT"]),
        ("flowforge-worker@.service", seconds["WORKER_SHUTDOWN_TIMEOUT"]),
    ):
        text = (SYSTEMD_DIR / unit).read_text()
        stop = int(re.search(r"^TimeoutStopSec=(\d+)s$", text, re.MULTILINE).group(1))
        assert stop > drain, unit
        for line in (
            "KillSignal=SIGTERM",
            "Type=notify",
            "EnvironmentFile=/etc/flowforge/flowforge.env",
            "Restart=on-failure",
            "User=flowforge",
        ):
            assert re.search(f"^{re.escape(line)}$", text, re.MULTILINE), (unit, line)
    assert "WatchdogSec=" in (SYSTEMD_DIR / "flowforge-worker.service").read_text()


def test_role_installs_the_units_from_deploy_systemd() -> None:
    """One source for the units: no copies under deploy/ansible."""
    copies = [p for p in ANSIBLE_DIR.rglob("*") if p.suffix in (".service", ".target")]
    assert copies == []
    defaults = (ANSIBLE_DIR / "roles" / "flowforge" / "defaults" / "main.yml").read_text()
    assert 'flowforge_units_dir: "{{ role_path }}/../../../systemd"' in defaults
    assert (ANSIBLE_DIR / "roles" / "flowforge" / "../../../systemd").resolve() == SYSTEMD_DIR


def test_ansible_lint_production_profile_passes() -> None:
    env = clean_env()
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-lint"), "--offline", "--profile", "production",
         "--nocolor", "deploy.yml", "roles"],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Profile 'production' was required, and it passed" in out.stdout + out.stderr


def test_vagrantfile_validates() -> None:
    out = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout
    text = (REPO / "Vagrantfile").read_text()
    assert 'ansible.playbook = "deploy/ansible/deploy.yml"' in text
    for group in ("database", "api", "worker"):
        assert f'"{group}" => ["flowforge-vm"]' in text


@pytest.mark.parametrize("provider", ["virtualbox", "libvirt", "lxc"])
def test_vagrantfile_validates_for_each_provider(provider: str) -> None:
    """`vagrant validate` with each provider's own checks (--ignore-provider skips them): a
    setting its plug-in does not know, or a bad value, fails here, not at someone's `vagrant
    up`. make test installs Debian's vagrant-libvirt and vagrant-lxc; VirtualBox has no
    Debian 12 package, so it is checked only where VBoxManage is."""
    assert f'provider "{provider}"' in (REPO / "Vagrantfile").read_text()
    if provider == "virtualbox":
        if shutil.which("VBoxManage") is None:
            pytest.skip("VirtualBox is not installed (Debian 12 has no package)")
    else:
        plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True)
        assert f"vagrant-{provider} " in plugins.stdout, (
            f"vagrant-{provider} is not installed: make system-deps installs it"
        )
    out = subprocess.run(
        ["vagrant", "validate"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**clean_env(), "VAGRANT_DEFAULT_PROVIDER": provider}, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout


def test_vagrantfile_lxc_block_matches_the_lxc_scripts() -> None:
    """The lxc provider's box, bridge and address are the ones make vagrant-box, host-net.sh
    and the Vagrant test use (a rename in one place only would fail in the slow test)."""
    from .conftest import VAGRANT_PRIVATE_BRIDGE as PRIVATE_BRIDGE
    from .conftest import VAGRANT_PRIVATE_IP as PRIVATE_IP

    text = (REPO / "Vagrantfile").read_text()
    lxc_block = text[text.index('provider "lxc"') :]
    assert 'override.vm.box = "flowforge/bookworm-lxc"' in lxc_block
    assert f'ip: "{PRIVATE_IP}"' in lxc_block
    assert f'lxc__bridge_name: "{PRIVATE_BRIDGE}"' in lxc_block
    assert "disabled: true" in lxc_block  # no port forward under lxc
    host_net = (REPO / "deploy" / "vagrant-lxc" / "host-net.sh").read_text()
    assert f"FLOWFORGE_VAGRANT_BRIDGE:-{PRIVATE_BRIDGE}}}" in host_net
    box = (REPO / "deploy" / "vagrant-lxc" / "build-box.sh").read_text()
    assert "FLOWFORGE_VAGRANT_BOX:-flowforge/bookworm-lxc}" in box
