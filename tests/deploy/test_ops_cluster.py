"""Several API hosts behind the balancer (the ``cluster`` fixture: database, workers and
HAProxy on host 1; api hosts 2 and 3), under a steady load through HAProxy:

- the load is spread over both api hosts, and each host's nginx answers on its own;
- killing one api host's gunicorn outright (SIGKILL to the arbiter and every worker) loses
  at most the requests that were in flight at that moment, and the balancer serves the rest
  from the other host until systemd has restarted the killed one;
- a playbook run shipping a changed version, one host at a time (drained from HAProxy,
  reloaded, put back once healthy), fails no request and loses no task.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from .conftest import CA_CERT, Cluster, children, source_at
from .load import Load, assert_tasks_stored_and_run

pytestmark = [pytest.mark.deploy, pytest.mark.cluster]

NEXT_VERSION = "0.1.0.post2"
RATE = 80  # requests a second through HAProxy in all (a third create tasks)
CLIENTS = 8
API_HOSTS = (1, 2)  # indexes into Cluster.ips / hosts


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> list[str]:
    """A write token per load client (each api host's nginx limits a token's rate)."""
    return [
        cluster.sh_on(1, f"flowforge token create cluster-load-{n} --scope write").strip()
        for n in range(CLIENTS)
    ]


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(CA_CERT)
    return session


def _load(cluster: Cluster, tokens: list[str]) -> Load:
    """Clients that send an Idempotency-Key with every POST (the balancer replays a POST
    on another api host only then: see the balancer role's haproxy.cfg)."""
    return Load(
        cluster.lb, rate=RATE, clients=CLIENTS, tokens=tokens, verify=str(CA_CERT),
        idempotency_keys=True,
    )  # fmt: skip


def _lb_servers(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """HAProxy's view of each api host: its state and the sessions it has served in all."""
    out = cluster.sh_on(0, "echo 'show stat' | socat stdio unix-connect:/run/haproxy/admin.sock")
    servers = {}
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == "flowforge_api" and fields[1] != "BACKEND":
            servers[fields[1]] = (fields[17], int(fields[7] or 0))  # status, stot
    return servers


def _wait_all_up(cluster: Cluster, seconds: float = 60) -> dict[str, tuple[str, int]]:
    deadline = time.monotonic() + seconds
    while True:
        servers = _lb_servers(cluster)
        if servers and all(state == "UP" for state, _ in servers.values()):
            return servers
        assert time.monotonic() < deadline, f"not every api host is UP in HAProxy: {servers}"
        time.sleep(0.5)


def _gunicorn(cluster: Cluster, n: int) -> tuple[int, set[int]]:
    main = int(cluster.sh_on(n, "systemctl show -P MainPID flowforge-api").strip())
    return main, children(cluster.hosts[n], main)


def test_the_balancer_spreads_requests_over_both_api_hosts(cluster: Cluster) -> None:
    before = _wait_all_up(cluster)
    assert len(before) == len(API_HOSTS), before
    session = _session()
    for _ in range(40):
        r = session.get(f"{cluster.lb}/health", timeout=10)
        assert r.status_code == 200, r.text
    after = _lb_servers(cluster)
    served = {name: after[name][1] - before[name][1] for name in before}
    assert all(n > 0 for n in served.values()), served
    for n in API_HOSTS:  # each api host's own edge answers too
        assert session.get(f"{cluster.api_at(n)}/health", timeout=10).status_code == 200


def test_killing_one_api_hosts_gunicorn_loses_at_most_the_requests_in_flight(
    cluster: Cluster, tokens: list[str]
) -> None:
    _wait_all_up(cluster)
    main, workers = _gunicorn(cluster, 1)
    assert workers, "gunicorn has no workers"
    with _load(cluster, tokens) as load:
        time.sleep(4)
        with load._lock:  # the in-flight count at the moment of the kill, not after it
            in_flight = load.in_flight
            cluster.sh_on(1, f"kill -KILL {main} {' '.join(map(str, workers))}")
        killed_at = time.monotonic()
        # systemd restarts the API (Restart=on-failure, RestartSec=2s); HAProxy's checks
        # take the host out meanwhile and back once it answers.
        deadline = killed_at + 60
        while True:
            new_main = cluster.hosts[1].run("systemctl show -P MainPID flowforge-api").stdout
            if new_main.strip() not in ("", "0", str(main)):
                break
            assert time.monotonic() < deadline, cluster.journal("flowforge-api")
            time.sleep(0.5)
        _wait_all_up(cluster)
        back_seconds = time.monotonic() - killed_at
        time.sleep(3)
    summary = f"{load.summary()}; in flight at the kill: {in_flight}"
    print(f"\none api host's gunicorn killed, back in HAProxy in {back_seconds:.1f} s; {summary}")
    cluster.figures["kill_one_api_host"] = {
        "back_in_balancer_seconds": round(back_seconds, 1),
        "in_flight_at_kill": in_flight,
        "failed": load.failed,
        "load": load.summary(),
    }
    assert load.failed <= in_flight, load.failures
    assert load.requests > RATE * 5
    assert_tasks_stored_and_run(load, cluster.psql)


class StateWatch:
    """HAProxy's view of the api hosts, sampled twice a second in a thread while a playbook
    runs: which states each host went through, and whether both were ever out at once."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            servers = _lb_servers(self.cluster)
            self.samples.append({name: state for name, (state, _) in servers.items()})

    def __enter__(self) -> StateWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def states(self, name: str) -> set[str]:
        return {sample[name].split()[0] for sample in self.samples if name in sample}

    def none_up(self) -> list[dict[str, str]]:
        return [s for s in self.samples if not any(v == "UP" for v in s.values())]


def test_rolling_upgrade_through_the_balancer_fails_no_request(
    cluster: Cluster, tokens: list[str]
) -> None:
    """Last in the module: the hosts stay on NEXT_VERSION."""
    names = set(_wait_all_up(cluster))
    source, wheelhouse = source_at(cluster.state, NEXT_VERSION)
    with _load(cluster, tokens) as load, StateWatch(cluster) as watch:
        time.sleep(2)
        run = cluster.run_playbook(
            "-e", f"flowforge_source_dir={source}", "-e", f"flowforge_wheelhouse_dir={wheelhouse}",
            timeout=1500,
        )  # fmt: skip
        time.sleep(2)
    print(f"\nrolling upgrade to {NEXT_VERSION} under load: {run.seconds:.1f} s; {load.summary()}")
    cluster.figures["rolling_upgrade_playbook_seconds"] = round(run.seconds, 1)
    cluster.figures["rolling_upgrade_load"] = load.summary()
    assert run.returncode == 0, run.output[-5000:]
    assert "RUNNING HANDLER [flowforge : Restart flowforge-api]" not in run.output
    # Each api host left HAProxy (MAINT) and came back, and never both at once.
    for name in names:
        assert {"UP", "MAINT"} <= watch.states(name), (name, watch.samples)
    assert watch.samples and not watch.none_up(), watch.none_up()[:5]
    session = _session()
    for n in API_HOSTS:
        health = session.get(f"{cluster.api_at(n)}/health", timeout=10).json()
        assert health["data"]["version"] == NEXT_VERSION, health
    _wait_all_up(cluster)
    assert load.failed == 0, load.failures
    assert load.requests > RATE * 10
    assert_tasks_stored_and_run(load, cluster.psql)
