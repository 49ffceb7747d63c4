"""Backups on the session's host: WAL archiving and timers in place, a backup started by hand,
and the restore drill of deploy/README.md (lose the data directory, restore to a point in
time, find exactly the tasks committed before it), timed."""

from __future__ import annotations

import json
import time

import pytest
import requests

from .conftest import CA_CERT, TestHost

pytestmark = pytest.mark.deploy

STANZA = "flowforge"
DATA_DIR = "/var/lib/postgresql/15/main"

http = requests.Session()
http.trust_env = False
http.verify = str(CA_CERT)


def _info(testhost: TestHost) -> dict:
    out = testhost.sh(f"cd / && sudo -u postgres pgbackrest --stanza={STANZA} --output=json info")
    return json.loads(out)[0]


def _create(testhost: TestHost, prefix: str, count: int) -> set[str]:
    titles = {f"{prefix}-{i}" for i in range(count)}
    for title in sorted(titles):
        response = http.post(f"{testhost.api}/v1/tasks", json={"title": title}, timeout=10)
        assert response.status_code == 201, response.text
    return titles


def test_archiving_and_timers_are_in_place(testhost: TestHost) -> None:
    assert testhost.psql("SHOW archive_mode").strip() == "on"
    assert "archive-push" in testhost.psql("SHOW archive_command").strip()
    info = _info(testhost)
    # The stanza exists in the repository: 0 ok, or 2 "no valid backups" before the first one.
    assert info["status"]["code"] in (0, 2), info["status"]
    for timer in ("flowforge-backup.timer", "flowforge-backup-full.timer"):
        assert testhost.sh(f"systemctl is-enabled {timer}").strip() == "enabled"
        assert testhost.sh(f"systemctl is-active {timer}").strip() == "active"
    for unit in ("flowforge-backup.service", "flowforge-backup-full.service"):
        # Not the flowforge services' shared sandbox (its RemoveIPC would take postgres's
        # shared memory): a drop-in of the same name replaces it.
        dropins = testhost.sh(f"systemctl show -P DropInPaths {unit}").split()
        assert dropins == [f"/etc/systemd/system/{unit}.d/sandbox.conf"], dropins
        assert testhost.sh(f"systemctl show -P RemoveIPC {unit}").strip() == "no"
    calendar = testhost.sh("systemctl show -P TimersCalendar flowforge-backup-full.timer")
    assert "Sun" in calendar, calendar
    conf = testhost.host.file("/etc/pgbackrest.conf")
    assert (conf.user, conf.mode) == ("postgres", 0o640)
    assert "repo1-retention-full=2" in conf.content_string


def test_restore_drill_to_a_point_in_time(testhost: TestHost) -> None:
    # A token from before the backup (one made after the target would not come back).
    token = testhost.sh("flowforge token create ops-restore-drill --scope write").strip()
    http.headers["Authorization"] = f"Bearer {token}"
    before_backup = _create(testhost, "drill-before-backup", 5)
    started = time.monotonic()
    testhost.sh("systemctl start flowforge-backup.service")  # by hand; a full when none yet
    backup_seconds = time.monotonic() - started
    assert testhost.sh("systemctl show -P Result flowforge-backup.service").strip() == "success"
    backups = _info(testhost)["backup"]
    assert backups and backups[0]["type"] == "full", backups

    before_target = _create(testhost, "drill-before-target", 5)
    # pgBackRest picks the backup by its stop time in whole seconds, strictly before the
    # target: a target in the second the backup ended finds none (exit 75, as an operator
    # would see it too). Take the target in a later second.
    stop = int(backups[0]["timestamp"]["stop"])
    while float(testhost.psql("SELECT extract(epoch FROM clock_timestamp())")) < stop + 1:
        time.sleep(0.1)
    target = testhost.psql("SELECT clock_timestamp()").strip()
    time.sleep(1)
    after_target = _create(testhost, "drill-after-target", 5)

    # The drill, as deploy/README.md has it.
    started = time.monotonic()
    testhost.sh(f"cd / && sudo -u postgres pgbackrest --stanza={STANZA} check")  # ship the WAL
    testhost.sh("systemctl stop flowforge.target")
    testhost.sh("systemctl stop postgresql")
    testhost.sh(f"rm -rf {DATA_DIR}")  # the disk is gone
    testhost.sh(f"install -d -o postgres -g postgres -m 0700 {DATA_DIR}")
    testhost.sh(
        f"cd / && sudo -u postgres pgbackrest --stanza={STANZA} --type=time "
        f'--target="{target}" --target-action=promote restore'
    )
    testhost.sh("systemctl start postgresql")
    testhost.sh(
        "for i in $(seq 120); do cd / && sudo -u postgres psql -Atc 'SELECT pg_is_in_recovery()'"
        " 2>/dev/null | grep -qx f && exit 0; sleep 0.5; done; exit 1"
    )
    testhost.sh("systemctl start flowforge.target")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if http.get(f"{testhost.api}/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    drill_seconds = time.monotonic() - started
    print(
        f"\nbackup by hand: {backup_seconds:.1f} s; restore drill (WAL shipped, stop, "
        f"restore to {target}, start, API healthy): {drill_seconds:.1f} s"
    )

    titles = set(testhost.psql("SELECT title FROM tasks WHERE title LIKE 'drill-%'").split())
    assert titles == before_backup | before_target, sorted(titles)
    assert not titles & after_target
    # Archiving goes on, on the new timeline, and the next backup works.
    testhost.sh(f"cd / && sudo -u postgres pgbackrest --stanza={STANZA} check")
    testhost.sh("systemctl start flowforge-backup.service")
    assert [b["type"] for b in _info(testhost)["backup"]] == ["full", "diff"]
