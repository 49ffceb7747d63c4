"""The deploy tests' hosts: fresh nspawn systemd hosts (deploy/testhost) for the session.

``testhost`` boots one (building the cached debootstrap root on the first run), runs
deploy.yml against it once over SSH like an operator would, and tears everything down
afterwards (container, network namespace, NAT rules, copied root), failed tests or not.
It uses its own name, namespace and subnet, so a `make vm` host can run beside it.
``cluster`` does the same for three hosts on one bridge of their own (database, workers and
the HAProxy balancer on the first; two api hosts), booted only if a test asks for it.
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
import yaml

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


CLUSTER_SUBNET = "10.213.81"  # 77 make vm, 78 testhost, 79 vagrant-lxc
CLUSTER_STATE = TESTHOST / "state" / "pytest-cluster"
CLUSTER_ENV = {
    "FLOWFORGE_TESTHOST_NAME": "flowforge-cl",
    "FLOWFORGE_TESTHOST_NETNS": "ffcluster",
    "FLOWFORGE_TESTHOST_SUBNET": CLUSTER_SUBNET,
    "FLOWFORGE_TESTHOST_STATE": str(CLUSTER_STATE),
    "FLOWFORGE_TESTHOST_COUNT": "3",
}


def clean_env(hosts: dict[str, str] = TESTHOST_ENV) -> dict[str, str]:
    """Our environment minus coverage's subprocess hook (ansible is not what we measure)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env.update(hosts)
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

    def recaps(self) -> dict[str, dict[str, int]]:
        """The PLAY RECAP counters of every host, by inventory name."""
        found = re.findall(r"^(\S+)\s+:\s+(ok=.*)$", self.output, re.MULTILINE)
        assert found, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return {
            host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
            for host, counters in found
        }


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
    state: Path = STATE
    env: dict[str, str] = field(default_factory=lambda: TESTHOST_ENV)

    @property
    def api(self) -> str:
        """The API as clients reach it: through nginx, HTTPS (verify with CA_CERT)."""
        return f"https://{self.ip}"

    def run_playbook(self, *args: str, timeout: float = 900) -> PlaybookRun:
        """deploy.yml as an operator runs it, from a controller without rsync (deploy/README
        names only Ansible and a Python with pip): PATH is ``controller_path()``; ``args`` go
        to ansible-playbook (``-e name=value``)."""
        started = time.monotonic()
        env = {**clean_env(self.env), "PATH": controller_path()}
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(self.inventory),
             "-e", f"@{self.state / 'extra-vars.json'}", *args, str(ANSIBLE_DIR / "deploy.yml")],
            cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=timeout,
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

    def psql(self, query: str) -> str:
        """A query run by psql as postgres on the host (the cluster's: host 1, the database
        host), unaligned and tuples only; fail unless it succeeds."""
        return self.sh(f'cd / && sudo -u postgres psql -d flowforge -Atc "{query}"')

    def journal(self, *units: str, lines: int = 60) -> str:
        """The last journal lines of ``units`` (for failure messages)."""
        return "".join(
            self.host.run(f"journalctl --no-pager -o short-precise -n {lines} -u {unit}").stdout
            for unit in units
        )


def children(host: testinfra.host.Host, pid: int) -> set[int]:
    """The processes whose parent is ``pid`` on ``host`` (from /proc: minimal Debian has no
    procps, and nspawn's cgroup paths differ from what systemctl shows)."""
    out = host.run("cat /proc/[0-9]*/stat 2>/dev/null; true").stdout
    found = set()
    for line in out.splitlines():
        fields = line.rsplit(")", 1)[-1].split()  # state, ppid, ... after "pid (comm)"
        if len(fields) > 1 and fields[1] == str(pid):
            found.add(int(line.split(" ", 1)[0]))
    return found


def source_at(state: Path, version: str) -> tuple[Path, Path]:
    """A copy of this session's source snapshot with another version number (pyproject.toml
    is the one place it is set), and the wheelhouse directory for it."""
    source = state / f"source-{version}"
    if source.exists():  # a previous session's, from an older tree
        shutil.rmtree(source)
    shutil.copytree(state / "source", source, symlinks=True)
    path = source / "pyproject.toml"
    text = path.read_text()
    start = text.index('\nversion = "') + len('\nversion = "')
    path.write_text(text[:start] + version + text[text.index('"', start) :])
    return source, state / f"wheelhouse-{version}"


def _snapshot_source(state: Path = STATE) -> None:
    """Both runs deploy the tree as it was at the start (files edited meanwhile by someone
    working in this checkout must not turn the second run into a change)."""
    source = state / "source"
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
        "flowforge_wheelhouse_dir": str(state / "wheelhouse"),
    }
    (state / "extra-vars.json").write_text(json.dumps(extra))


def _down(hosts: dict[str, str] = TESTHOST_ENV) -> None:
    subprocess.run([str(TESTHOST / "down.sh")], env=clean_env(hosts), check=False, timeout=180)


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


def _write_timings(testhost: TestHost | None, name: str = "pytest-timings.json") -> None:
    if testhost is None:
        return
    figures = {
        "boot_seconds_including_debootstrap_if_uncached": round(testhost.boot_seconds, 1),
        "playbook_runs_seconds": [round(run.seconds, 1) for run in testhost.runs],
        **testhost.figures,
    }
    (STATE.parent / name).write_text(json.dumps(figures, indent=2) + "\n")


@dataclass
class Cluster(TestHost):
    """Three hosts on one bridge: ``ips[0]`` holds the database, the workers and the HAProxy
    balancer (``lb``); ``ips[1:]`` are the api hosts behind it. ``host``/``sh`` are host 1."""

    ips: list[str] = field(default_factory=list)
    hosts: list[testinfra.host.Host] = field(default_factory=list)

    @property
    def lb(self) -> str:
        """HAProxy, HTTPS (verify with CA_CERT)."""
        return f"https://{self.ips[0]}"

    def api_at(self, n: int) -> str:
        """Host ``n``'s own edge (nginx, HTTPS)."""
        return f"https://{self.ips[n]}"

    def sh_on(self, n: int, command: str) -> str:
        """Run a command as root on host ``n`` (0-based); fail unless it exits 0."""
        result = self.hosts[n].run(command)
        assert result.rc == 0, f"{command!r} exited {result.rc}: {result.stderr}{result.stdout}"
        return result.stdout


def _without_monitoring(inventory: Path) -> None:
    """The cluster's inventory minus up.sh's monitoring group: its tests are about the
    balancer, and the monitoring role is tested on the single host (and its multi-host
    configuration offline): the cluster's runs stay minutes shorter."""
    data = yaml.safe_load(inventory.read_text())
    data.pop("monitoring", None)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session")
def cluster(deploy_lock: None) -> Iterator[Cluster]:
    """Three hosts booted on one bridge and deployed once, for the tests that need a
    balancer in front of several api hosts."""
    count = int(CLUSTER_ENV["FLOWFORGE_TESTHOST_COUNT"])
    _down(CLUSTER_ENV)
    started = time.monotonic()
    try:
        subprocess.run(
            [str(TESTHOST / "up.sh"), "--no-deploy"],
            env=clean_env(CLUSTER_ENV), check=True, timeout=600,
        )  # fmt: skip
        boot_seconds = time.monotonic() - started
        _snapshot_source(CLUSTER_STATE)
        _without_monitoring(CLUSTER_STATE / "inventory.yml")
        ips = [f"{CLUSTER_SUBNET}.{n + 2}" for n in range(count)]
        ssh_config = CLUSTER_STATE / "ssh_config"
        ssh_config.write_text(
            f"Host {CLUSTER_SUBNET}.*\n  User deploy\n"
            f"  IdentityFile {CLUSTER_STATE / 'id_ed25519'}\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        hosts = [
            testinfra.get_host(f"ssh://{ip}", ssh_config=str(ssh_config), sudo=True) for ip in ips
        ]
        cluster = Cluster(
            ips[0], CLUSTER_STATE / "inventory.yml", hosts[0], boot_seconds,
            state=CLUSTER_STATE, env=CLUSTER_ENV, ips=ips, hosts=hosts,
        )  # fmt: skip
        cluster.run_playbook()
        yield cluster
    finally:
        _down(CLUSTER_ENV)
        _write_timings(locals().get("cluster"), "pytest-cluster-timings.json")
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ffcluster" not in leftovers, "down.sh left a network namespace behind"
