"""/dashboard and /docs in a real headless Chromium (Debian's chromium and chromedriver,
driven by selenium), against the app over real HTTP and a real PostgreSQL.

Screenshots land in ``test-artifacts/`` (git-ignored; FLOWFORGE_TEST_ARTIFACTS moves it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from ..support import ROOT, Tokens

ARTIFACTS = Path(os.environ.get("FLOWFORGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), f"{path} is missing: `make test` installs chromium"
    profile = tempfile.mkdtemp(prefix="flowforge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, as root (no sandbox), and nothing that phones home: this machine's
    # network is closed and the pages must need nothing but the API's own origin.
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _wait(driver: webdriver.Chrome, condition, timeout: float = 15):  # type: ignore[no-untyped-def]
    # The page redraws its tables every few seconds: an element found just before a redraw
    # is stale, so look again.
    return WebDriverWait(
        driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
    ).until(condition)


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _seed(db: psycopg.Connection) -> dict[str, int]:
    """Tasks in every state the dashboard shows (and no live worker); returns the ids of
    the failed ones."""
    db.execute("DELETE FROM workers")
    db.execute(
        "INSERT INTO tasks (title, queue, type) SELECT 'queued ' || g, "
        "CASE WHEN g <= 3 THEN 'default' ELSE 'mail' END, 'noop' FROM generate_series(1, 5) g"
    )
    db.execute(
        "INSERT INTO tasks (title, status, attempts, started_at, completed_at) "
        "VALUES ('done', 'completed', 1, now(), now())"
    )
    failed = {}
    for title, error in (("resize", "OSError: disk full"), ("send", "timed out after 30 s")):
        (failed[title],) = db.execute(
            "INSERT INTO tasks (title, status, attempts, max_attempts, last_error, queue, "
            "started_at, completed_at) VALUES (%s, 'failed', 3, 3, %s, 'mail', now(), now()) "
            "RETURNING id",
            (title, error),
        ).fetchone()
    return failed


def _sign_in(driver: webdriver.Chrome, base: str, token: str, view: str = "") -> None:
    """Sign in on the page of ``view`` (``#queues``...; the overview without one)."""
    driver.get(f"{base}/dashboard")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{base}/dashboard{view}")
    field = _wait(driver, ec.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    _wait(driver, ec.text_to_be_present_in_element((By.ID, "state"), "live"))


def test_dashboard_shows_the_apis_numbers_and_retries_a_failure(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    failed = _seed(db)
    db.execute(
        "INSERT INTO queue_settings (name, paused, paused_by, concurrency) VALUES "
        "('mail', true, 'breaker', NULL), ('reports', false, NULL, 3)"
    )
    _sign_in(browser, api_url, api_tokens.write)
    # /v1/stats is cached 2 s per process: an earlier test's numbers may show first, and
    # the page refreshes every 5 s.
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "count-failed"), "2"))
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "count-pending"), "5"))
    stats = requests.get(
        f"{api_url}/v1/stats", headers=api_tokens.headers("read"), timeout=10
    ).json()["data"]
    shown = {s: _text(browser, f"count-{s}") for s in STATUSES}
    assert shown == {s: str(stats["tasks"]["by_status"][s]) for s in STATUSES}
    assert shown == {"pending": "5", "processing": "0", "completed": "1", "failed": "2",
                     "cancelled": "0"}  # fmt: skip
    queues = {
        row.get_attribute("data-queue"): [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "#queues tbody tr")
    }
    assert queues["default"][1:5] == ["active", "3", "0", "0"]
    assert queues["mail"][1:5] == ["paused by its breaker", "2", "0", "2"]
    assert queues["reports"][1:5] == ["3 at once", "0", "0", "0"]  # settings, no tasks yet
    rows = browser.find_elements(By.CSS_SELECTOR, "#failures tbody tr")
    assert {int(r.get_attribute("data-task-id")) for r in rows} == set(failed.values())
    assert "OSError: disk full" in browser.find_element(By.ID, "failures").text
    assert _text(browser, "workers-empty") == "No live worker: pending tasks wait."
    _shot(browser, "dashboard")

    target = failed["resize"]
    browser.find_element(
        By.CSS_SELECTOR, f'#failures tr[data-task-id="{target}"] button.retry'
    ).click()
    _wait(
        browser,
        lambda d: not d.find_elements(By.CSS_SELECTOR, f'#failures tr[data-task-id="{target}"]'),
    )
    task = requests.get(
        f"{api_url}/v1/tasks/{target}", headers=api_tokens.headers(), timeout=10
    ).json()["data"]
    assert (task["status"], task["attempts"]) == ("pending", 0)
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "count-failed"), "1"))
    _shot(browser, "dashboard-after-retry")


def test_dashboard_looks_up_a_task_and_cancels_it(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    (task_id,) = db.execute("INSERT INTO tasks (title) VALUES ('later') RETURNING id").fetchone()
    _sign_in(browser, api_url, api_tokens.write)
    browser.find_element(By.ID, "lookup-id").send_keys(str(task_id))
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    cancel = _wait(browser, ec.element_to_be_clickable((By.CSS_SELECTOR, "#lookup button.cancel")))
    assert "later" in _text(browser, "lookup")
    cancel.click()
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "lookup"), "cancelled"))
    (status,) = db.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert status == "cancelled"
    _shot(browser, "dashboard-lookup")


def test_dashboard_shows_a_failed_tasks_attempts_and_its_traceback_as_text(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    # Markup in a handler's error and traceback: shown as text, never run or rendered.
    trap = '<img src=x onerror="window.pwned=1">'
    traceback = (
        'Traceback (most recent call last):\n  File "/srv/h.py", line 7, in resize\n'
        f"    raise KeyError({trap!r})\nKeyError: '{trap}'\n"
    )
    log = [
        {"attempt": 1, "worker": "host-a:41", "started_at": "2026-12-07T10:00:00+00:00",
         "finished_at": "2026-12-07T10:00:01.5+00:00", "outcome": "retried",
         "error": f"KeyError: '{trap}'", "traceback": traceback, "cpu_seconds": 0.25,
         "max_rss_bytes": 31457280, "exit_signal": None},
        {"attempt": 2, "worker": "host-b:7", "started_at": "2026-12-07T10:00:05+00:00",
         "finished_at": "2026-12-07T10:00:06+00:00", "outcome": "crashed",
         "error": "worker child died: signal 9 (SIGKILL)", "traceback": None,
         "cpu_seconds": None, "max_rss_bytes": None, "exit_signal": 9},
    ]  # fmt: skip
    db.execute("DELETE FROM tasks")
    (task_id,) = db.execute(
        "INSERT INTO tasks (title, status, attempts, max_attempts, last_error, started_at, "
        "completed_at, attempt_log) VALUES ('resize', 'failed', 2, 2, %s, now(), now(), %s) "
        "RETURNING id",
        (log[1]["error"], json.dumps(log)),
    ).fetchone()
    _sign_in(browser, api_url, api_tokens.read)
    link = _wait(
        browser,
        ec.element_to_be_clickable(
            (By.CSS_SELECTOR, f'#failures tr[data-task-id="{task_id}"] button.link')
        ),
    )
    link.click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "attempts-panel")))
    assert f"task #{task_id}" in _text(browser, "attempts-of")
    rows = browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr[data-attempt]")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[0] for c in cells] == ["#1", "#2"]
    first, second = cells
    assert first[1:3] == ["retried", "host-a:41"]
    assert first[5:9] == ["1.500 s", "0.250 s", "30.0 MiB", "—"]
    assert first[9] == f"KeyError: '{trap}'"
    assert second[1:3] == ["crashed", "host-b:7"] and second[5:9] == ["1.000 s", "—", "—", "9"]
    assert second[9] == "worker child died: signal 9 (SIGKILL)"
    started = rows[0].find_elements(By.TAG_NAME, "td")[3]
    assert started.get_attribute("title") == "2026-12-07T10:00:00Z" and started.text
    # One traceback (the crash had none), collapsed until asked for, monospace, as text.
    (details,) = browser.find_elements(By.CSS_SELECTOR, "#attempts details.traceback")
    pre = details.find_element(By.TAG_NAME, "pre")
    assert details.get_attribute("open") is None and not pre.is_displayed()
    details.find_element(By.TAG_NAME, "summary").click()
    _wait(browser, lambda _: pre.is_displayed())
    assert pre.text == traceback.rstrip()
    assert 'File "/srv/h.py", line 7' in pre.text
    assert "monospace" in pre.value_of_css_property("font-family")
    assert not browser.find_elements(By.CSS_SELECTOR, "#attempts img, #lookup img")
    assert browser.execute_script("return window.pwned") is None
    _shot(browser, "dashboard-attempts")

    # A task not tried yet says so; an unknown one hides the attempts.
    (new_id,) = db.execute("INSERT INTO tasks (title) VALUES ('new') RETURNING id").fetchone()
    browser.find_element(By.ID, "lookup-id").clear()
    browser.find_element(By.ID, "lookup-id").send_keys(str(new_id))
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "attempts-empty")))
    assert not browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    browser.find_element(By.ID, "lookup-id").clear()
    browser.find_element(By.ID, "lookup-id").send_keys("424242")
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "lookup"), "No task 424242."))
    assert not browser.find_element(By.ID, "attempts-panel").is_displayed()


def test_dashboard_refuses_a_bad_token_and_a_read_token_cannot_retry(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    failed = _seed(db)
    browser.get(f"{api_url}/dashboard")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{api_url}/dashboard")
    _wait(browser, ec.visibility_of_element_located((By.ID, "token"))).send_keys("ff_nonsense")
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    _wait(browser, ec.visibility_of_element_located((By.ID, "signin-error")))
    assert "refused" in _text(browser, "signin-error")

    # A read token sees the failures and a task's page with no Retry or Cancel to press.
    _sign_in(browser, api_url, api_tokens.read)
    target = failed["send"]
    _wait(
        browser,
        ec.presence_of_element_located((By.CSS_SELECTOR, f'#failures tr[data-task-id="{target}"]')),
    )
    assert not browser.find_elements(By.CSS_SELECTOR, "#failures button.retry")
    _click(browser, f'#failures tr[data-task-id="{target}"] button.link')
    _wait(browser, ec.text_to_be_present_in_element((By.ID, "lookup"), "timed out after 30 s"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#lookup button")
    (status,) = db.execute("SELECT status FROM tasks WHERE id = %s", (target,)).fetchone()
    assert status == "failed"


def test_docs_render_the_spec_from_this_server_only(
    browser: webdriver.Chrome, api_url: str
) -> None:
    browser.get(f"{api_url}/docs")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 8)
    summaries = browser.find_element(By.ID, "swagger-ui").text
    assert "List tasks, newest first" in summaries and "FlowForge" in summaries
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(name.startswith(api_url) for name in resources), resources
    _shot(browser, "docs")


# -- the Queues and Schedules views ---------------------------------------------------------

TRAP = '<img src=x onerror="window.pwned=1">'


def _open_view(driver: webdriver.Chrome, name: str, table: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#tabs a[href="#{name}"]').click()
    _wait(driver, ec.visibility_of_element_located((By.ID, table)))


def _row(driver: webdriver.Chrome, table: str, key: str, name: str) -> list[str]:
    css = f'#{table} tr[data-{key}="{name}"] td'
    return _wait(driver, lambda d: [td.text for td in d.find_elements(By.CSS_SELECTOR, css)])


def _click(driver: webdriver.Chrome, css: str) -> None:
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)


def _fill(driver: webdriver.Chrome, css: str, value: str) -> None:
    def fill(d: webdriver.Chrome) -> bool:
        box = d.find_element(By.CSS_SELECTOR, css)
        box.clear()
        box.send_keys(value)
        return box.get_attribute("value") == value

    _wait(driver, fill)


def _cell_says(table: str, key: str, name: str, column: int, text: str):  # type: ignore[no-untyped-def]
    def check(driver: webdriver.Chrome) -> bool:
        rows = driver.find_elements(By.CSS_SELECTOR, f'#{table} tr[data-{key}="{name}"]')
        return bool(rows) and text in rows[0].find_elements(By.TAG_NAME, "td")[column].text

    return check


def _inert(driver: webdriver.Chrome) -> None:
    assert not driver.find_elements(By.CSS_SELECTOR, "#board img")
    assert driver.execute_script("return window.pwned") is None


def test_queues_view_shows_each_queue_and_pauses_and_limits_one(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    _seed(db)  # default: 3 pending, 1 completed; mail: 2 pending, 2 failed
    db.execute(
        "INSERT INTO queue_settings (name, paused, paused_by) VALUES ('mail', true, 'breaker')"
    )
    breaker = {"failures": 5, "window": 60, "cooldown": 30}
    response = requests.put(
        f"{api_url}/v1/queues/mail", json={"breaker": breaker}, headers=api_tokens.headers(),
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    _sign_in(browser, api_url, api_tokens.write, "#queues")
    _wait(browser, _cell_says("queue-list", "queue", "mail", 1, "paused by its breaker"))
    default = _row(browser, "queue-list", "queue", "default")
    assert default[:7] == ["default", "running", "3", "0", "1", "0", "0"]
    assert default[7].endswith(" s") and default[8:10] == ["unlimited", "unlimited"]
    mail = _row(browser, "queue-list", "queue", "mail")
    assert mail[2:7] == ["2", "0", "0", "2", "0"]
    assert mail[10] == "5 failures in 60 s; cooldown 30 s" and default[10] == "off"
    assert browser.find_element(By.ID, "queue-actions-head").is_displayed()

    pause = '#queue-list tr[data-queue="default"] button.pause'
    _click(browser, pause)
    _wait(browser, _cell_says("queue-list", "queue", "default", 1, "paused"))
    assert db.execute(
        "SELECT paused, paused_by FROM queue_settings WHERE name = 'default'"
    ).fetchone() == (True, "operator")

    form = '#queue-list tr[data-queue="default"] form.limits'
    for field, value in (("concurrency", "4"), ("rate", "10/2")):
        _fill(browser, f'{form} input[name="{field}"]', value)
    _click(browser, f"{form} button.set-limits")
    _wait(browser, _cell_says("queue-list", "queue", "default", 9, "10 per 2 s"))
    assert _row(browser, "queue-list", "queue", "default")[8] == "4"
    assert db.execute(
        "SELECT paused, concurrency, rate_limit, rate_per FROM queue_settings "
        "WHERE name = 'default'"
    ).fetchone() == (True, 4, 10, 2.0)
    _shot(browser, "dashboard-queues")

    # The API's refusal is shown in the row, as is a typed value the page cannot send.
    _fill(browser, f'{form} input[name="concurrency"]', "0")
    _click(browser, f"{form} button.set-limits")
    error = _wait(
        browser, ec.visibility_of_element_located((By.CSS_SELECTOR, "#queue-list tr.error-row"))
    )
    assert "the queue settings are not valid" in error.text and "concurrency:" in error.text
    _fill(browser, f'{form} input[name="rate"]', TRAP)
    _click(browser, f"{form} button.set-limits")
    _wait(
        browser,
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#queue-list tr.error-row"), TRAP),
    )
    _inert(browser)
    assert db.execute(
        "SELECT concurrency FROM queue_settings WHERE name = 'default'"
    ).fetchone() == (4,)

    _click(browser, '#queue-list tr[data-queue="default"] button.resume')
    _wait(browser, _cell_says("queue-list", "queue", "default", 1, "running"))
    assert db.execute("SELECT paused FROM queue_settings WHERE name = 'default'").fetchone() == (
        False,
    )
    # The tabs are hash routes: back to the overview (its queues table says the same), the
    # Queues view hidden. (Not last in the file: /v1/stats is cached 2 s per process.)
    _open_view(browser, "overview", "count-pending")
    assert browser.current_url.endswith("#overview")
    assert not browser.find_element(By.ID, "queue-list").is_displayed()
    _wait(browser, lambda d: "paused by its breaker" in d.find_element(By.ID, "queues").text)


def _schedule(api_url: str, api_tokens: Tokens, name: str, title: str) -> dict:
    response = requests.post(
        f"{api_url}/v1/schedules",
        json={"name": name, "cron": "0 3 * * *", "timezone": "Europe/Riga", "title": title},
        headers=api_tokens.headers(),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def test_schedules_view_shows_the_next_run_runs_one_now_and_pauses_it(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    schedule = _schedule(api_url, api_tokens, "nightly", f"report {TRAP}")
    _sign_in(browser, api_url, api_tokens.write, "#schedules")
    _wait(browser, _cell_says("schedule-list", "schedule", "nightly", 5, "active"))
    cells = _row(browser, "schedule-list", "schedule", "nightly")
    assert cells[:5] == ["nightly", f"report {TRAP}", "0 3 * * *", "Europe/Riga", "default"]
    assert "(in " in cells[6] and cells[7] == "—"
    next_run = browser.find_elements(
        By.CSS_SELECTOR, '#schedule-list tr[data-schedule="nightly"] td'
    )[6]
    assert next_run.get_attribute("title") == schedule["next_run_at"]

    _click(browser, '#schedule-list tr[data-schedule="nightly"] button.run-now')
    note = _wait(
        browser, ec.visibility_of_element_located((By.CSS_SELECTOR, "#schedule-list tr.note-row"))
    )
    (task_id,) = db.execute("SELECT id FROM tasks WHERE schedule = 'nightly'").fetchall()[0]
    assert note.text == f"Run now: created task #{task_id}"
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)

    _click(browser, '#schedule-list tr[data-schedule="nightly"] button.pause')
    _wait(browser, _cell_says("schedule-list", "schedule", "nightly", 5, "paused"))
    assert db.execute("SELECT paused FROM schedules WHERE name = 'nightly'").fetchone() == (True,)
    _shot(browser, "dashboard-schedules")

    # Gone meanwhile: Resume's 404 (the envelope's message) shows below the list, as text.
    db.execute("DELETE FROM schedules")
    _click(browser, '#schedule-list tr[data-schedule="nightly"] button.resume')
    gone = _wait(browser, ec.visibility_of_element_located((By.CSS_SELECTOR, "#schedule-gone p")))
    assert gone.text == "Resume failed: schedule 'nightly' not found"
    assert _text(browser, "schedule-list-empty") == "No schedule yet."
    _inert(browser)


def test_a_read_token_sees_queues_and_schedules_with_no_action_controls(
    browser: webdriver.Chrome, api_url: str, db: psycopg.Connection, api_tokens: Tokens
) -> None:
    _seed(db)
    _schedule(api_url, api_tokens, "hourly", TRAP)
    # Not through the overview: its /v1/stats, cached 2 s, would show a later test's
    # counts from before that test's rows.
    _sign_in(browser, api_url, api_tokens.read, "#queues")
    for view, table, key, name in (
        ("queues", "queue-list", "queue", "mail"),
        ("schedules", "schedule-list", "schedule", "hourly"),
    ):
        _open_view(browser, view, table)
        _wait(
            browser,
            ec.presence_of_element_located((By.CSS_SELECTOR, f'#{table} tr[data-{key}="{name}"]')),
        )
        assert not browser.find_elements(By.CSS_SELECTOR, f"#{table} button, #{table} input")
        head = "queue-actions-head" if view == "queues" else "schedule-actions-head"
        assert not browser.find_element(By.ID, head).is_displayed()
    assert _row(browser, "schedule-list", "schedule", "hourly")[1] == TRAP
    _inert(browser)
    assert db.execute("SELECT count(*) FROM queue_settings").fetchone() == (0,)
