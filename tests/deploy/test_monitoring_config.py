"""The monitoring role's Prometheus configuration without a host: rendered by Ansible from a
multi-host inventory (worker instances, a separate monitoring host), it names every target
the inventory implies and `promtool check config` accepts it with the rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ANSIBLE_DIR, REPO, clean_env

ROLE = ANSIBLE_DIR / "roles" / "monitoring"

INVENTORY = """
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: {python}
  hosts:
    db1: {{ansible_host: 10.0.10.5}}
    api1: {{ansible_host: 10.0.10.11}}
    api2: {{ansible_host: 10.0.10.12}}
    w1: {{ansible_host: 10.0.10.21, flowforge_worker_instances: 3}}
    w2: {{ansible_host: 10.0.10.22}}
    mon: {{ansible_host: 10.0.10.9}}
database: {{hosts: {{db1: }}}}
api: {{hosts: {{api1: , api2: }}}}
worker: {{hosts: {{w1: , w2: }}}}
monitoring: {{hosts: {{mon: }}}}
"""

PLAYBOOK = """
- hosts: mon
  gather_facts: false
  vars_files:
    - {endpoints}/defaults/main.yml
    - {role}/defaults/main.yml
    - {flowforge}/defaults/main.yml
  vars:
    role_path: {role}
  tasks:
    - ansible.builtin.template:
        src: {role}/templates/prometheus.yml.j2
        dest: {out}/prometheus.yml
        mode: "0644"
    - ansible.builtin.copy:
        content: >-
          {{{{ rules | regex_replace('(?m)^(\\s+for:) .*$', '\\1 ' ~ monitoring_rules_for) }}}}
        dest: {out}/flowforge-rules.yml
        mode: "0644"
      vars:
        rules: "{{{{ lookup('ansible.builtin.file', monitoring_rules_file) }}}}\\n"
    - ansible.builtin.copy:
        content: "{{{{ flowforge_metrics_allow }}}}\\n"
        dest: {out}/metrics_allow
        mode: "0644"
"""


def test_targets_follow_the_inventory_and_promtool_accepts_them(tmp_path: Path) -> None:
    (tmp_path / "inventory.yml").write_text(INVENTORY.format(python=sys.executable))
    (tmp_path / "credentials").mkdir()
    (tmp_path / "play.yml").write_text(
        PLAYBOOK.format(
            role=ROLE,
            flowforge=ANSIBLE_DIR / "roles" / "flowforge",
            endpoints=ANSIBLE_DIR / "roles" / "flowforge_endpoints",  # the ports they share
            out=tmp_path,
        )
    )
    env = clean_env()
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "inventory.yml",
         "-e", "monitoring_rules_for=10s", "play.yml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [
            (t, c.get("labels", {})) for c in job["static_configs"] for t in c["targets"]
        ]
        for job in config["scrape_configs"]
    }
    assert [t for t, _ in jobs["flowforge-api"]] == ["10.0.10.11:443", "10.0.10.12:443"]
    api = next(j for j in config["scrape_configs"] if j["job_name"] == "flowforge-api")
    assert api["scheme"] == "https"
    assert api["tls_config"]["ca_file"] == "/etc/prometheus/flowforge-api-ca.crt"
    # three worker processes on w1 (9464..9466), one on w2
    assert jobs["flowforge-worker"] == [
        ("10.0.10.21:9464", {"host": "w1", "worker_instance": "1"}),
        ("10.0.10.21:9465", {"host": "w1", "worker_instance": "2"}),
        ("10.0.10.21:9466", {"host": "w1", "worker_instance": "3"}),
        ("10.0.10.22:9464", {"host": "w2", "worker_instance": "1"}),
    ]
    assert [t for t, _ in jobs["postgres"]] == ["10.0.10.5:9187"]
    assert sorted(t for t, _ in jobs["node"]) == sorted(
        f"10.0.10.{n}:9100" for n in (5, 11, 12, 21, 22, 9)
    )
    # the services let the monitoring host read their /metrics
    assert (tmp_path / "metrics_allow").read_text().strip() == "127.0.0.0/8,::1,10.0.10.9"

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package")
    text = (tmp_path / "prometheus.yml").read_text()
    text = text.replace(
        "/etc/prometheus/flowforge-rules.yml", str(tmp_path / "flowforge-rules.yml")
    )
    text = text.replace(
        "ca_file: /etc/prometheus/flowforge-api-ca.crt", "insecure_skip_verify: false"
    )
    (tmp_path / "prometheus.yml").write_text(text)
    rules = (tmp_path / "flowforge-rules.yml").read_text()
    assert "for: 10s" in rules and "for: 1m" not in rules  # the test hosts' override
    check = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # Every alert of deploy/prometheus/flowforge-rules.yml, as deployed.
    source = (REPO / "deploy" / "prometheus" / "flowforge-rules.yml").read_text()
    count = sum(len(group["rules"]) for group in yaml.safe_load(source)["groups"])
    assert f"SUCCESS: {count} rules found" in check.stdout + check.stderr
