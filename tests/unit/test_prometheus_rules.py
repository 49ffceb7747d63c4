"""FlowForge's alert rules (deploy/prometheus/): `promtool check rules` accepts them and
`promtool test rules` runs their unit tests (promtool comes with Debian's `prometheus`);
every alert docs/operations.md promises exists and has a test."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from ..support import ROOT

RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "flowforge-rules.yml"
RULE_TESTS = RULES_DIR / "flowforge-rules.test.yml"
ALERTS = {
    "FlowForgeWorkerDown",
    "FlowForgeApiDown",
    "FlowForgeQueueBacklog",
    "FlowForgeQueueBreakerTripped",
    "FlowForgeTaskFailureRatioHigh",
    "FlowForgeApi5xxRatioHigh",
    "FlowForgeDatabaseDown",
    "FlowForgeTransactionOpenTooLong",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (make system-deps)")
    return path


def test_promtool_checks_the_rules(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    out = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_is_defined_tested_and_documented() -> None:
    rules = yaml.safe_load(RULES.read_text())
    defined = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert defined == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # a firing case, not only a quiet one
    }
    assert tested == ALERTS
    guide = (ROOT / "docs" / "operations.md").read_text()
    for alert in ALERTS:
        assert re.search(rf"`{alert}`", guide), f"docs/operations.md does not explain {alert}"
