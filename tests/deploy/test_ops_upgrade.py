"""Zero-downtime operations on the session's host: `systemctl reload flowforge-api` and a
playbook run that ships a changed version, each under a steady load of reads and task
creation, fail no request and lose no task."""

from __future__ import annotations

import time

import pytest
import requests

from .conftest import CA_CERT, STATE, TestHost, children, source_at
from .load import Load, assert_tasks_stored_and_run

pytestmark = pytest.mark.deploy

NEXT_VERSION = "0.1.0.post1"
RATE = 150  # requests a second (a third create tasks), on a 2-worker API
CLIENTS = 8


@pytest.fixture(scope="module")
def auth(testhost: TestHost) -> list[str]:
    """A write token per load client (the edge limits each token's rate), made as an
    operator makes them."""
    return [
        testhost.sh(f"flowforge token create ops-upgrade-load-{n} --scope write").strip()
        for n in range(CLIENTS)
    ]


def _load(testhost: TestHost, tokens: list[str]) -> Load:
    return Load(testhost.api, rate=RATE, clients=CLIENTS, tokens=tokens, verify=str(CA_CERT))


def _version(testhost: TestHost) -> str:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(CA_CERT)
    return session.get(f"{testhost.api}/health", timeout=5).json()["data"]["version"]


def _api_workers(testhost: TestHost) -> set[int]:
    main = int(testhost.sh("systemctl show -P MainPID flowforge-api").strip())
    return children(testhost.host, main)


def test_reload_under_load_fails_no_request(testhost: TestHost, auth: list[str]) -> None:
    before = _api_workers(testhost)
    with _load(testhost, auth) as load:
        time.sleep(3)
        started = time.monotonic()
        reload = testhost.host.run("systemctl reload flowforge-api")
        reload_seconds = time.monotonic() - started
        time.sleep(3)
    assert reload.rc == 0, reload.stderr + testhost.journal("flowforge-api")
    print(f"\nsystemctl reload under load: {reload_seconds:.1f} s; {load.summary()}")
    testhost.figures["reload_seconds"] = round(reload_seconds, 1)
    testhost.figures["reload_load"] = load.summary()
    after = _api_workers(testhost)
    assert after and not after & before, (before, after)  # every worker is new
    assert load.failed == 0, load.failures
    assert load.requests > RATE * 4
    assert_tasks_stored_and_run(load, testhost.psql, seconds=60)


def test_playbook_ships_a_new_version_through_a_reload_under_load(
    testhost: TestHost, auth: list[str]
) -> None:
    """Last in the session's use of the host: it stays on NEXT_VERSION afterwards (a rollback
    is the same run with the previous release's source)."""
    source, wheelhouse = source_at(STATE, NEXT_VERSION)
    before = _api_workers(testhost)
    with _load(testhost, auth) as load:
        time.sleep(2)
        run = testhost.run_playbook(
            "-e", f"flowforge_source_dir={source}", "-e", f"flowforge_wheelhouse_dir={wheelhouse}"
        )  # fmt: skip
        time.sleep(2)
    print(f"\nplaybook to {NEXT_VERSION} under load: {run.seconds:.1f} s; {load.summary()}")
    testhost.figures["upgrade_playbook_seconds"] = round(run.seconds, 1)
    testhost.figures["upgrade_load"] = load.summary()
    journal = testhost.journal("flowforge-migrate", "flowforge-api")
    assert run.returncode == 0, run.output[-4000:] + "\n" + journal
    assert "RUNNING HANDLER [flowforge : Reload flowforge-api]" in run.output
    assert "RUNNING HANDLER [flowforge : Restart flowforge-api]" not in run.output
    assert _version(testhost) == NEXT_VERSION
    after = _api_workers(testhost)
    assert after and not after & before, (before, after)
    assert load.failed == 0, load.failures
    assert_tasks_stored_and_run(load, testhost.psql, seconds=60)
    # Only the one FlowForge wheel is left on the host.
    wheels = testhost.sh("ls /opt/flowforge/wheelhouse").split()
    ours = [w for w in wheels if w.startswith("flowforge-")]
    assert ours == [f"flowforge-{NEXT_VERSION}-py3-none-any.whl"]
