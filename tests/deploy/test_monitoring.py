"""Monitoring on the deployed test host (in every group, `monitoring` included): Prometheus's
targets API shows every target up (the API through nginx, HTTPS), FlowForge's rules are
loaded, the postgres exporter logs in as a pg_monitor-only role, a worker's /metrics refuses
addresses outside METRICS_ALLOW, and stopping a worker raises FlowForgeWorkerDown (the
test inventory evaluates every 2 s, `for: 10s`).

Runs after test_deploy.py on the same host (file order)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from .conftest import TestHost

pytestmark = pytest.mark.deploy

http = requests.Session()
http.trust_env = False

JOBS = {"prometheus", "node", "postgres", "flowforge-api", "flowforge-worker"}


def prom(testhost: TestHost, path: str) -> Any:
    """Prometheus's HTTP API, asked on the host itself (its port is the host's business)."""
    url = f"http://127.0.0.1:9090/api/v1/{path}"
    out = testhost.sh(
        f"python3 -c 'import sys, urllib.request; "
        f"sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' '{url}'"
    )
    body = json.loads(out)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check: Callable[[], Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_services_are_running(testhost: TestHost) -> None:
    for unit in ("prometheus", "prometheus-node-exporter", "prometheus-postgres-exporter"):
        assert testhost.sh(f"systemctl is-active {unit}").strip() == "active", unit
        assert testhost.sh(f"systemctl is-enabled {unit}").strip() == "enabled", unit
    args = testhost.sh("cat /etc/default/prometheus")
    assert "--storage.tsdb.retention.time=15d" in args


def test_every_target_is_up(testhost: TestHost) -> None:
    def all_up() -> list[dict] | None:
        targets = prom(testhost, "targets?state=active")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_for("every target up", all_up, 60)
    print()
    for t in targets:
        print(f"  {t['labels']['job']:18} {t['scrapeUrl']:45} {t['health']}")
    assert {t["labels"]["job"] for t in targets} == JOBS
    workers = [t for t in targets if t["labels"]["job"] == "flowforge-worker"]
    assert [t["scrapeUrl"] for t in workers] == [f"http://{testhost.ip}:9464/metrics"]
    # the API through nginx, its certificate checked against the private CA
    api = [t for t in targets if t["labels"]["job"] == "flowforge-api"]
    assert [t["scrapeUrl"] for t in api] == [f"https://{testhost.ip}:443/metrics"]


def test_rules_are_loaded(testhost: TestHost) -> None:
    groups = prom(testhost, "rules")["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {
        "FlowForgeWorkerDown",
        "FlowForgeApiDown",
        "FlowForgeQueueBacklog",
        "FlowForgeTaskFailureRatioHigh",
        "FlowForgeApi5xxRatioHigh",
        "FlowForgeDatabaseDown",
        "FlowForgeTransactionOpenTooLong",
    } <= names
    assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups


def test_metrics_reach_prometheus(testhost: TestHost) -> None:
    def value(query: str) -> float | None:
        result = prom(testhost, f"query?query={requests.utils.quote(query)}")["result"]
        return float(result[0]["value"][1]) if result else None

    assert wait_for("pg_up", lambda: value("pg_up") == 1, 30)
    assert value('flowforge_database_up{job="flowforge-api"}') == 1
    assert value("flowforge_worker_capacity") == 8
    assert value('count(flowforge_tasks{queue="default"})') == 5  # one series per status
    assert value("flowforge_db_oldest_transaction_age_seconds") is not None


def test_postgres_exporter_role_is_pg_monitor_only(testhost: TestHost) -> None:
    row = testhost.sh(
        'sudo -u postgres psql -Atc "SELECT rolsuper, rolcreaterole, rolcreatedb, '
        "array_to_string(ARRAY(SELECT b.rolname FROM pg_auth_members m "
        "JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid), ',') "
        "FROM pg_roles r WHERE rolname = 'prometheus'\""
    ).strip()
    assert row == "f|f|f|pg_monitor"
    # and it cannot read FlowForge's tables
    out = testhost.host.run(
        "sudo -u prometheus psql -h /run/postgresql -d postgres -Atc 'SELECT 1 FROM tasks'"
    )
    assert out.rc != 0


def test_worker_metrics_refuse_addresses_outside_the_allow_list(testhost: TestHost) -> None:
    # This machine is not a monitoring host: a worker's /metrics answers 403 (the API's is
    # nginx's business: test_edge).
    response = http.get(f"http://{testhost.ip}:9464/metrics", timeout=5)
    assert response.status_code == 403
    assert "flowforge_" not in response.text
    env = testhost.sh("cat /etc/flowforge/flowforge.env")
    assert f"METRICS_ALLOW=127.0.0.0/8,::1,{testhost.ip}" in env


def test_stopping_a_worker_raises_its_alert(testhost: TestHost) -> None:
    def firing() -> list[dict]:
        return [
            a
            for a in prom(testhost, "alerts")["alerts"]
            if a["labels"]["alertname"] == "FlowForgeWorkerDown" and a["state"] == "firing"
        ]

    assert firing() == []
    started = time.monotonic()
    testhost.sh("systemctl stop flowforge-worker")
    try:
        alerts = wait_for("FlowForgeWorkerDown firing", firing, 60)
        print(f"\nFlowForgeWorkerDown firing {time.monotonic() - started:.1f} s after the stop")
        assert alerts[0]["labels"]["instance"] == f"{testhost.ip}:9464"
    finally:
        testhost.sh("systemctl start flowforge-worker")
    wait_for("the alert to resolve", lambda: not firing(), 60)
