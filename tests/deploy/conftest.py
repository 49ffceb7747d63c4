"""The deploy tests' host: a fresh nspawn systemd host (deploy/testhost) for the session.

``testhost`` boots it (building the cached debootstrap root on the first run), runs
deploy.yml against it once over SSH like an operator would, and tears everything down
afterwards (container, network namespace, NAT rules, copied root), failed tests or not.
It uses its own name, namespace and subnet, so a `make vm` host can run beside it.
"""

from __future__ import annotations

import fcntl
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
import testinfra

REPO = Path(__file__).resolve().parents[2]
TESTHOST = REPO / "deploy" / "testhost"
ANSIBLE_DIR = REPO / "deploy" / "ansible"
STATE = TESTHOST / "state" / "pytest"  # git-ignored, like the rest of state/
SUBNET = "10.213.78"
RAM_MB = 2048  # up.sh's inventory sets postgresql_ram_mb to this
API_PORT = 8080  # gunicorn, on the host's loopback only
# The private CA the nginx role makes on the controller (git-ignored, kept between sessions).
CA_CERT = ANSIBLE_DIR / "credentials" / "ca.crt"
# `vagrant up --provider=lxc` (test_vagrant; test_files checks the Vagrantfile says the same)
VAGRANT_PRIVATE_IP = "10.213.79.10"  # the Vagrantfile's private network under lxc
VAGRANT_PRIVATE_BRIDGE = "ffvagrant0"
# One deploy session per machine at a time: the namespace, subnet and NAT rules are fixed.
LOCK = Path("/run/lock/flowforge-deploy-tests.lock")

TESTHOST_ENV = {
    "FLOWFORGE_TESTHOST_NAME": "flowforge-pytest",
    "FLOWFORGE_TESTHOST_NETNS": "ffpytest",
    "FLOWFORGE_TESTHOST_SUBNET": SUBNET,
    "FLOWFORGE_TESTHOST_STATE": str(STATE),
}


def clean_env() -> dict[str, str]:
    """Our environment minus coverage's subprocess hook (ansible is not what we measure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env.update(TESTHOST_ENV)
    env["ANSIBLE_CONFIG"] = str(ANSIBLE_DIR / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def controller_path() -> str:
    """This machine's PATH without rsync: one directory of links to every other command
    on PATH (the first of each name), so the playbook runs as on a controller that never
    installed rsync (the test machine has it for its own use: the source snapshot)."""
    bin_dir = STATE / "controller-bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    bin_dir.mkdir(parents=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory or not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name == "rsync" or link.exists() or link.is_symlink():
                continue
            if os.access(entry.path, os.X_OK) and not entry.is_dir():
                link.symlink_to(entry.path)
    return str(bin_dir)


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    seconds: float

    def recap(self) -> dict[str, int]:
        """The PLAY RECAP counters of the one host (ok, changed, failed, ...)."""
        match = re.search(r"^\S+\s+:\s+(ok=.*)$", self.output, re.MULTILINE)
        assert match, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@dataclass
class TestHost:
    __test__ = False  # not a test class, whatever its name

    ip: str
    inventory: Path
    host: testinfra.host.Host
    boot_seconds: float
    runs: list[PlaybookRun] = field(default_factory=list)
    # Figures the tests measured (written to pytest-timings.json with the run times).
    figures: dict[str, object] = field(default_factory=dict)

    @property
    def api(self) -> str:
        """The API as clients reach it: through nginx, HTTPS (verify with CA_CERT)."""
        return f"https://{self.ip}"

    def run_playbook(self) -> PlaybookRun:
        """deploy.yml as an operator runs it, from a controller without rsync (deploy/README
        names only Ansible and a Python with pip): PATH is ``controller_path()``."""
        started = time.monotonic()
        env = {**clean_env(), "PATH": controller_path()}
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(self.inventory),
             "-e", f"@{STATE / 'extra-vars.json'}", str(ANSIBLE_DIR / "deploy.yml")],
            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            output += self.failed_units_journal()
        run = PlaybookRun(proc.returncode, output, time.monotonic() - started)
        self.runs.append(run)
        return run

    def failed_units_journal(self, lines: int = 40) -> str:
        """The failed units of the host and the end of each one's journal (the host is gone
        after the session: a failed run's assertion message carries why)."""
        failed = self.host.run("systemctl list-units --failed --no-legend --plain").stdout
        out = f"\n--- failed units on the host ---\n{failed}"
        for unit in (line.split()[0] for line in failed.splitlines() if line.strip()):
            journal = self.host.run(f"journalctl -b --no-pager -n {lines} -u {unit}").stdout
            out += f"--- journalctl -u {unit} ---\n{journal}"
        return out

    def sh(self, command: str) -> str:
        """Run a command as root on the host; fail with its output unless it exits 0."""
        result = self.host.run(command)
        assert result.rc == 0, f"{command!r} exited {result.rc}: {result.stderr}{result.stdout}"
        return result.stdout


def _snapshot_source() -> None:
    """Both runs deploy the tree as it was at the start (files edited meanwhile by someone
    working in this checkout must not turn the second run into a change)."""
    source = STATE / "source"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout  # fmt: skip
    source.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["rsync", "-a", "--delete", "--from0", "--files-from=-", "--ignore-missing-args",
         "./", f"{source}/"],
        cwd=REPO, input=files, check=True,
    )  # fmt: skip
    extra = {
        "flowforge_source_dir": str(source),
        "flowforge_wheelhouse_dir": str(STATE / "wheelhouse"),
    }
    (STATE / "extra-vars.json").write_text(json.dumps(extra))


def _down() -> None:
    subprocess.run([str(TESTHOST / "down.sh")], env=clean_env(), check=False, timeout=120)


@pytest.fixture(scope="session")
def deploy_lock() -> Iterator[None]:
    """The machine-wide deploy lock, taken by the first deploy fixture and held to the end of
    the session (the test host and the Vagrant container both change ip_forward, NAT rules
    and bridges; a flock taken twice in one process would wait for itself)."""
    if os.geteuid() != 0:
        pytest.fail("the deploy tests need root (debootstrap, systemd-nspawn, netns, iptables)")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session on this machine: wait for it
        yield


@pytest.fixture(scope="session")
def testhost(deploy_lock: None) -> Iterator[TestHost]:
    _down()  # leftovers of an interrupted session
    started = time.monotonic()
    try:
        subprocess.run(
            [str(TESTHOST / "up.sh"), "--no-deploy"], env=clean_env(), check=True, timeout=600
        )
        boot_seconds = time.monotonic() - started
        _snapshot_source()
        ssh_config = STATE / "ssh_config"
        ssh_config.write_text(
            f"Host {SUBNET}.2\n  User deploy\n  IdentityFile {STATE / 'id_ed25519'}\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        host = testinfra.get_host(f"ssh://{SUBNET}.2", ssh_config=str(ssh_config), sudo=True)
        testhost = TestHost(f"{SUBNET}.2", STATE / "inventory.yml", host, boot_seconds)
        testhost.run_playbook()
        yield testhost
    finally:
        _down()
        _write_timings(locals().get("testhost"))
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ffpytest" not in leftovers, "down.sh left the network namespace behind"
    nat = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "flowforge-testhost-ffpytest" not in nat, "down.sh left NAT rules behind"


def _write_timings(testhost: TestHost | None) -> None:
    if testhost is None:
        return
    figures = {
        "boot_seconds_including_debootstrap_if_uncached": round(testhost.boot_seconds, 1),
        "playbook_runs_seconds": [round(run.seconds, 1) for run in testhost.runs],
        **testhost.figures,
    }
    (STATE.parent / "pytest-timings.json").write_text(json.dumps(figures, indent=2) + "\n")
