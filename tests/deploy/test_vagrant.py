"""`vagrant up` for real, without a hypervisor: the Vagrantfile's lxc provider end to end.

As docs/deployment.md tells a user: `make vagrant-box` (the box, lxc-net on the host), then
from a copy of the repository with the project's venv on PATH `vagrant up --provider=lxc`, the units
through `vagrant ssh`, `GET /health` from the host at the private address, `vagrant
provision` again (changed=0), and `vagrant destroy -f` whatever happened. The host's links,
iptables rules and ip_forward must be as they were before. Marker `vagrant` (also `deploy`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from .conftest import REPO, VAGRANT_PRIVATE_IP, PlaybookRun

pytestmark = [pytest.mark.deploy, pytest.mark.vagrant]

VAGRANT_LXC = REPO / "deploy" / "vagrant-lxc"
STATE = VAGRANT_LXC / "state" / "pytest"  # git-ignored
MACHINE = "flowforge-vm"
PRIVATE_IP = VAGRANT_PRIVATE_IP

http = requests.Session()
http.trust_env = False  # straight to the container, whatever proxy the environment names


def _env() -> dict[str, str]:
    """What a user has after `make venv`: the project's venv first on PATH (the provisioner
    runs `ansible-playbook` from there); coverage's hook left out (not what we measure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "ANSIBLE_"))}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["VAGRANT_NO_COLOR"] = "1"
    return env


def _host_network() -> dict[str, object]:
    """The host's links, iptables rules and ip_forward. A test host that another session
    started without the deploy lock (its `ff*-o` veth and tagged rules) is not ours."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True)
    return {
        "links": sorted(
            name
            for name in (line.split(":")[1].strip() for line in links.stdout.splitlines())
            if not re.match(r"ff\w*-o(@|$)", name)
        ),
        # rules only: a table loaded and emptied again is no change
        "iptables": sorted(
            line
            for line in rules.stdout.splitlines()
            if line.startswith("-A") and "flowforge-testhost-" not in line
        ),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
    }


@dataclass
class Vagrant:
    cwd: Path
    runs: dict[str, float] = field(default_factory=dict)  # seconds per command
    up: subprocess.CompletedProcess[str] | None = None

    def run(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(
            ["vagrant", *args], cwd=self.cwd, env=_env(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        self.runs[" ".join(args[:2])] = round(time.monotonic() - started, 1)
        return proc

    def ssh(self, command: str) -> str:
        proc = self.run("ssh", "-c", command, timeout=120)
        assert proc.returncode == 0, f"{command!r}: {proc.stdout}{proc.stderr}"
        return proc.stdout


def _copy_repository(dest: Path) -> None:
    """The checkout as git sees it (tracked and new files, not ignored ones), so `.vagrant/`
    and the generated credentials land in the copy; the copy's wheelhouse is kept between
    sessions."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["rsync", "-a", "--delete", "--from0", "--files-from=-", "--ignore-missing-args",
         "./", f"{dest}/"],
        cwd=REPO, input=files, check=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def vagrant(deploy_lock: None) -> Iterator[Vagrant]:
    for tool in ("vagrant", "lxc-start", "brctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make test installs vagrant-lxc's packages)")
    repo = STATE / "repo"
    box = subprocess.run(
        [str(VAGRANT_LXC / "build-box.sh")], env=_env(), capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert box.returncode == 0, box.stdout + box.stderr
    if (repo / ".vagrant").exists():  # an interrupted session left a container behind
        Vagrant(repo).run("destroy", "-f")
    subprocess.run([str(VAGRANT_LXC / "host-net.sh"), "down"], check=True)
    before = _host_network()
    _copy_repository(repo)
    machine = Vagrant(repo)
    try:
        subprocess.run([str(VAGRANT_LXC / "host-net.sh"), "up"], check=True)
        machine.up = machine.run("up", "--provider=lxc")
        yield machine
    finally:
        destroyed = machine.run("destroy", "-f")
        subprocess.run([str(VAGRANT_LXC / "host-net.sh"), "down"], check=False)
        STATE.mkdir(parents=True, exist_ok=True)
        (STATE.parent / "pytest-timings.json").write_text(json.dumps(machine.runs, indent=2))
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    containers = subprocess.run(["lxc-ls", "-1"], capture_output=True, text=True).stdout
    assert MACHINE not in containers.split(), "vagrant destroy left the container"
    assert _host_network() == before, "the host's links, firewall or ip_forward changed"


def _recap(output: str) -> dict[str, int]:
    return PlaybookRun(0, output, 0).recap()


def test_vagrant_up_provisions_the_container(vagrant: Vagrant) -> None:
    up = vagrant.up
    assert up is not None
    print(f"\nvagrant up --provider=lxc: {vagrant.runs['up --provider=lxc']} s")
    assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]
    recap = _recap(up.stdout)
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] > 0


def test_units_are_active_through_vagrant_ssh(vagrant: Vagrant) -> None:
    out = vagrant.ssh("systemctl is-active flowforge-api.service flowforge-worker.service")
    assert out.split() == ["active", "active"]


def test_health_answers_from_the_host_at_the_private_address(vagrant: Vagrant) -> None:
    # Through nginx on 443 with the certificate from the private CA the play made in the
    # copy (its SAN holds every address of the host, the private one included). /health
    # needs no token.
    ca = vagrant.cwd / "deploy" / "ansible" / "credentials" / "ca.crt"
    response = http.get(f"https://{PRIVATE_IP}/health", timeout=10, verify=str(ca))
    assert response.status_code == 200, response.text
    assert response.json()["error"] is None


def test_second_provision_changes_nothing(vagrant: Vagrant) -> None:
    again = vagrant.run("provision")
    print(f"\nvagrant provision: {vagrant.runs['provision']} s")
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    recap = _recap(again.stdout)
    assert recap["changed"] == 0 and recap["failed"] == 0, again.stdout[-5000:]
