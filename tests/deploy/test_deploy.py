"""deploy.yml against a fresh Debian 12 systemd host, inspected as an operator would.

The tests run in file order on one host (the session's ``testhost``): first the deploy,
then what it built, then a worker stop mid-task, and last the second run (changed=0).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
import uuid

import pytest
import requests

from .conftest import CA_CERT, RAM_MB, TestHost, controller_path

pytestmark = pytest.mark.deploy

# Straight to the test host, whatever proxy the environment names; HTTPS through nginx,
# verified with the private CA the playbook made on the controller.
http = requests.Session()
http.trust_env = False
http.verify = str(CA_CERT)

UNITS = ("flowforge-api.service", "flowforge-worker.service")


@pytest.fixture(scope="module", autouse=True)
def _api_token(testhost: TestHost) -> None:
    """The tests' write token, made as an operator makes one: root runs `flowforge`."""
    name = f"deploy-tests-{uuid.uuid4().hex[:8]}"
    token = testhost.sh(f"flowforge token create {name} --scope write").strip()
    http.headers["Authorization"] = f"Bearer {token}"


def test_playbook_succeeds_on_a_fresh_host(testhost: TestHost) -> None:
    first = testhost.runs[0]
    print(f"\nfresh deploy: {first.seconds:.1f} s (boot {testhost.boot_seconds:.1f} s)")
    assert first.returncode == 0, first.output[-5000:]
    recap = first.recap()
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] > 0


def test_the_controller_needed_no_rsync(testhost: TestHost) -> None:
    """Every playbook run here had a PATH without rsync (``controller_path``), the
    wheelhouse built and mirrored by Python alone."""
    assert shutil.which("rsync", path=controller_path()) is None
    first = testhost.runs[0]
    assert first.returncode == 0, first.output[-3000:]
    assert "rsync" not in first.output


def test_services_are_active_and_enabled(testhost: TestHost) -> None:
    for unit in (*UNITS, "postgresql@15-main.service", "nginx.service"):
        service = testhost.host.service(unit)
        assert service.is_running, unit
        assert testhost.sh(f"systemctl is-active {unit}").strip() == "active"
    for unit in UNITS:
        assert testhost.sh(f"systemctl is-enabled {unit}").strip() == "enabled"
    # Type=notify: systemd saw READY=1 from both (else they would still be "activating").
    for unit in UNITS:
        assert testhost.sh(f"systemctl show -P Type {unit}").strip() == "notify"
    # the worker's watchdog is armed (a hung worker is killed and restarted)
    assert testhost.sh("systemctl show -P WatchdogUSec flowforge-worker").strip() == "1min"
    # the oneshot migration ran as the owner role and succeeded
    assert testhost.sh("systemctl show -P Result flowforge-migrate.service").strip() == "success"


def test_env_files_are_not_world_readable(testhost: TestHost) -> None:
    env = testhost.host.file("/etc/flowforge/flowforge.env")
    assert (env.user, env.group, env.mode) == ("root", "flowforge", 0o640)
    owner_env = testhost.host.file("/etc/flowforge/migrate.env")
    assert (owner_env.user, owner_env.group, owner_env.mode) == ("root", "root", 0o600)
    # the services' user reads the env file; other users do not
    assert testhost.host.run("sudo -u nobody cat /etc/flowforge/flowforge.env").rc != 0
    # and the runtime URL is the one in flowforge.env, not the owner's
    assert "flowforge_app:" in env.content_string
    assert "flowforge_owner:" in owner_env.content_string


def _kb(setting: str, unit: str) -> int:
    """pg_settings value in kB (its unit is 8kB for shared_buffers, kB or MB otherwise)."""
    factor = {"8kB": 8, "kB": 1, "MB": 1024}[unit]
    return int(setting) * factor


def test_postgresql_settings_follow_the_formulas(testhost: TestHost) -> None:
    rows = testhost.sh(
        "sudo -u postgres psql -AtF '|' -c \"SELECT name, setting, coalesce(unit, '') "
        "FROM pg_settings WHERE name IN ('shared_buffers', 'effective_cache_size', "
        "'maintenance_work_mem', 'work_mem', 'wal_buffers', 'max_connections', "
        "'min_wal_size', 'max_wal_size', 'checkpoint_completion_target', 'random_page_cost', "
        "'effective_io_concurrency', 'jit', 'listen_addresses', 'password_encryption', "
        "'autovacuum_naptime')\""
    )
    got = {name: (setting, unit) for name, setting, unit in (r.split("|") for r in rows.split())}
    ram_kb = RAM_MB * 1024
    shared_kb = ram_kb // 4
    expected_kb = {
        "shared_buffers": shared_kb,
        "effective_cache_size": ram_kb * 3 // 4,
        "maintenance_work_mem": min(ram_kb // 16, 8 * 1024 * 1024),
        "wal_buffers": min(shared_kb * 3 // 100, 16 * 1024),
        "work_mem": max((ram_kb - shared_kb) // ((100 + 8) * 3), 4096),
        "min_wal_size": 1024 * 1024,
        "max_wal_size": 4 * 1024 * 1024,
    }
    print()
    for name, want in expected_kb.items():
        value = _kb(*got[name])
        print(f"{name:22} {value:>9} kB (formula {want} kB)")
        assert value == want, name
    assert got["max_connections"][0] == "100"
    assert float(got["checkpoint_completion_target"][0]) == 0.9
    assert float(got["random_page_cost"][0]) == 1.1
    assert got["effective_io_concurrency"][0] == "200"
    assert got["jit"][0] == "off"
    assert got["autovacuum_naptime"] == ("15", "s")
    assert got["password_encryption"][0] == "scram-sha-256"
    # every client is on this host: PostgreSQL listens on loopback only
    assert got["listen_addresses"][0] == "localhost"
    with pytest.raises(OSError), socket.create_connection((testhost.ip, 5432), timeout=3):
        pass


def _psql_as(testhost: TestHost, env_file: str, sql: str) -> tuple[int, str]:
    """Run SQL with the DATABASE_URL of one env file (the role the services use)."""
    result = testhost.host.run(
        f'. {env_file} && psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -Atc "{sql}"'
    )
    return result.rc, result.stdout + result.stderr


def test_runtime_role_reads_and_writes_tasks_but_cannot_change_the_schema(
    testhost: TestHost,
) -> None:
    env = "/etc/flowforge/flowforge.env"
    rc, out = _psql_as(
        testhost,
        env,
        "BEGIN; INSERT INTO tasks (title) VALUES ('privilege probe'); "
        "UPDATE tasks SET title = 'probe 2' WHERE title = 'privilege probe'; "
        "SELECT id FROM tasks WHERE title = 'probe 2' FOR UPDATE SKIP LOCKED; "
        "DELETE FROM tasks WHERE title = 'probe 2'; ROLLBACK;",
    )
    assert rc == 0, out
    for ddl, refusal in (
        ("CREATE TABLE intruder (id int)", "permission denied for schema public"),
        ("DROP TABLE tasks", "must be owner of table tasks"),
        ("ALTER TABLE tasks ADD COLUMN x int", "must be owner of table tasks"),
        ("TRUNCATE tasks", "permission denied for table tasks"),
        # the migration history is the owner's alone
        (
            "UPDATE alembic_version SET version_num = 'x'",
            "permission denied for table alembic_version",
        ),
        ("DELETE FROM alembic_version", "permission denied for table alembic_version"),
    ):
        rc, out = _psql_as(testhost, env, ddl)
        assert rc != 0 and refusal in out, (ddl, out)
    # the owner role (migrations) owns the tables
    owner = testhost.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'tasks'")
    assert owner.strip() == "flowforge_owner"


def test_api_answers_from_outside_the_host(testhost: TestHost) -> None:
    response = http.get(f"{testhost.api}/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["error"] is None
    assert response.headers["X-Request-ID"]


def test_root_runs_flowforge_with_the_services_environment(testhost: TestHost) -> None:
    listed = testhost.sh("flowforge token list")
    assert listed.splitlines()[0].split()[:2] == ["NAME", "SCOPE"]
    assert "deploy-tests-" in listed and "Bearer" not in listed
    # Without a token the task routes are closed, from outside too.
    anon = requests.Session()
    anon.trust_env = False
    anon.verify = str(CA_CERT)
    response = anon.get(f"{testhost.api}/v1/tasks", timeout=5)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    read = testhost.sh("flowforge token create deploy-reader --scope read").strip()
    refused = anon.post(f"{testhost.api}/v1/tasks", json={"title": "x"}, timeout=5,
                            headers={"Authorization": f"Bearer {read}"})  # fmt: skip
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    testhost.sh("flowforge token revoke deploy-reader")
    failed = testhost.host.run("flowforge token create deploy-reader --scope read")
    assert failed.rc == 1 and "already exists" in failed.stderr


def _wait_for_status(testhost: TestHost, task_id: int, want: str, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        task = http.get(f"{testhost.api}/v1/tasks/{task_id}", timeout=5).json()["data"]
        if task["status"] == want or time.monotonic() > deadline:
            assert task["status"] == want, task
            return task
        time.sleep(0.2)


def test_task_completes_and_journal_follows_its_request_through_both_units(
    testhost: TestHost,
) -> None:
    request_id = f"deploy-{uuid.uuid4().hex[:12]}"
    response = http.post(
        f"{testhost.api}/v1/tasks",
        json={"title": "deploy test", "type": "noop"},
        headers={"X-Request-ID": request_id},
        timeout=5,
    )
    assert response.status_code == 201, response.text
    task = _wait_for_status(testhost, response.json()["data"]["id"], "completed", 30)
    assert task["request_id"] == request_id

    units: set[str] = set()
    deadline = time.monotonic() + 10
    while units != set(UNITS) and time.monotonic() < deadline:
        lines = testhost.sh(f"journalctl --no-pager -o json REQUEST_ID={request_id}")
        entries = [json.loads(line) for line in lines.splitlines()]
        units = {entry.get("_SYSTEMD_UNIT") for entry in entries}
        time.sleep(0.5)
    print(f"\njournalctl REQUEST_ID={request_id}:")
    for entry in entries:
        print(f"  {entry.get('_SYSTEMD_UNIT')} TASK_ID={entry.get('TASK_ID')}: {entry['MESSAGE']}")
    assert units == set(UNITS)
    # the worker's line carries the task as a field too
    assert any(
        e.get("_SYSTEMD_UNIT") == "flowforge-worker.service" and e.get("TASK_ID") == str(task["id"])
        for e in entries
    )


def test_each_running_unit_scores_at_most_1_5(testhost: TestHost) -> None:
    """Scored as systemd runs them: the unit with the sandbox drop-in they share."""
    print()
    for unit in (*UNITS, "flowforge-migrate.service"):
        dropins = testhost.sh(f"systemctl show -P DropInPaths {unit}").split()
        assert "/etc/systemd/system/flowforge-.service.d/sandbox.conf" in dropins, unit
    for unit in UNITS:
        out = testhost.sh(f"systemd-analyze security --no-pager {unit}")
        score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out).group(1))
        print(f"systemd-analyze security {unit}: {score}")
        assert score <= 1.5, out


SHARED_SANDBOX = "/etc/systemd/system/flowforge-.service.d/sandbox.conf"


def test_the_shared_sandbox_reaches_only_units_running_as_flowforge(testhost: TestHost) -> None:
    """systemd applies flowforge-.service.d/ to every flowforge-*.service. Its RemoveIPC=yes
    in a unit running as postgres removes PostgreSQL's shared memory when that unit stops
    (seen: every new connection then fails, "could not open shared memory segment"): such
    a unit needs its own flowforge-NAME.service.d/sandbox.conf, which replaces the shared one."""
    units = testhost.sh(
        "systemctl list-unit-files --no-legend --plain 'flowforge-*.service' | cut -d' ' -f1"
    ).split()
    assert "flowforge-api.service" in units
    for unit in units:
        name = unit.replace("@.", "@1.")  # a template: as its instances run
        user = testhost.sh(f"systemctl show -P User {name}").strip()
        dropins = testhost.sh(f"systemctl show -P DropInPaths {name}").split()
        if user != "flowforge":
            assert SHARED_SANDBOX not in dropins, (unit, user, dropins)


def test_worker_stop_mid_task_gives_it_back_and_start_carries_on(testhost: TestHost) -> None:
    # WORKER_SHUTDOWN_TIMEOUT is 5s on the test host; the task sleeps longer than that.
    response = http.post(
        f"{testhost.api}/v1/tasks",
        json={"title": "long", "type": "sleep", "payload": {"seconds": 10}},
        timeout=5,
    )
    task_id = response.json()["data"]["id"]
    _wait_for_status(testhost, task_id, "processing", 15)

    testhost.sh("systemctl stop flowforge-worker")
    show = testhost.sh("systemctl show -p Result -p ExecMainStatus flowforge-worker")
    assert "Result=success" in show and "ExecMainStatus=0" in show, show
    processing = http.get(f"{testhost.api}/v1/tasks?status=processing", timeout=5).json()
    assert processing["meta"]["total"] == 0, processing
    _wait_for_status(testhost, task_id, "pending", 0)  # given back, not lost

    testhost.sh("systemctl start flowforge-worker")
    assert testhost.sh("systemctl is-active flowforge-worker").strip() == "active"
    task = _wait_for_status(testhost, task_id, "completed", 60)
    assert task["attempts"] >= 1


def test_target_stops_and_starts_everything(testhost: TestHost) -> None:
    assert testhost.sh("systemctl is-enabled flowforge.target").strip() == "enabled"
    testhost.sh("systemctl stop flowforge.target")
    for unit in UNITS:
        assert testhost.host.run(f"systemctl is-active {unit}").stdout.strip() == "inactive"
    # nginx stays up and answers for the API: a 502 envelope with a request ID
    down = http.get(f"{testhost.api}/health", timeout=5)
    assert down.status_code == 502 and down.json()["error"]["code"] == "bad_gateway"
    assert down.headers["X-Request-ID"]
    # The target is reached before its units (they are ordered after it, for the stop), so
    # start returns with their start jobs queued: wait for them.
    testhost.sh("systemctl start flowforge.target")
    testhost.sh(
        "for i in $(seq 120); do systemctl is-active -q " + " ".join(UNITS) + " && exit 0;"
        " sleep 0.25; done; exit 1"
    )
    assert http.get(f"{testhost.api}/health", timeout=5).status_code == 200


def test_second_run_changes_nothing(testhost: TestHost) -> None:
    again = testhost.run_playbook()
    print(f"\nre-run: {again.seconds:.1f} s")
    assert again.returncode == 0, again.output[-5000:]
    recap = again.recap()
    changed = [line for line in again.output.splitlines() if line.startswith("changed:")]
    assert recap["changed"] == 0, (changed, again.output[-5000:])
    assert http.get(f"{testhost.api}/health", timeout=5).status_code == 200
