"""A steady, bounded load for the operations tests: clients that create a task and read it
back (and read a page of the list), at a fixed total rate, counting every outcome.

Every request that did not get its expected status is counted by kind, so a test asserts
``failed == 0`` (and reads the kinds when it is not). Tasks whose creation was answered 201
are remembered: none may be missing afterwards. With ``idempotency_keys``, every POST
carries a key of its own (as a client that may retry sends), so the balancer may replay it
on another api host: a 200 replay of the same task counts as created too. Titles start with
``title_prefix`` (``load RUN``, RUN random per load), to find this load's tasks.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests


@dataclass
class Load:
    """``with Load(base, rate=200) as load: ...``: ``rate`` requests a second in all,
    spread over ``clients`` threads (each sends one request at a time)."""

    base: str
    rate: float = 200.0
    clients: int = 8
    tokens: list[str] = field(default_factory=list)  # client n sends tokens[n % len]
    verify: str | bool = True  # a CA file for HTTPS
    session_factory: Callable[[], requests.Session] = requests.Session
    timeout: float = 30.0
    idempotency_keys: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    created: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.run = secrets.token_hex(4)  # this load's tasks: titles "load RUN ...", keys "RUN-..."
        self.title_prefix = f"load {self.run} "
        self.replayed = 0  # POSTs answered 200 Idempotent-Replayed (a balancer's retry)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = 0  # requests sent and not yet answered, now
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(self.clients)
        ]

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind != "ok")

    def _count(self, kind: str, detail: str = "") -> None:
        with self._lock:
            self.outcomes[kind] += 1
            if kind != "ok" and len(self.failures) < 50:
                self.failures.append(f"{time.strftime('%T')} {kind} {detail}")

    def _client(self, n: int) -> None:
        session = self.session_factory()
        session.trust_env = False  # straight to the host, whatever proxy is set
        session.verify = self.verify
        if self.tokens:
            session.headers["Authorization"] = f"Bearer {self.tokens[n % len(self.tokens)]}"
        interval = self.clients / self.rate  # seconds between this client's requests
        next_at = time.monotonic() + interval * n / self.clients
        i = 0
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            i += 1
            with self._lock:
                self.in_flight += 1
            try:
                self._one(session, f"{n}-{i}", i % 3)
            except requests.RequestException as exc:
                self._count(type(exc).__name__, str(exc)[:200])
            finally:
                with self._lock:
                    self.in_flight -= 1

    def _one(self, session: requests.Session, name: str, kind: int) -> None:
        if kind == 1 or not self.created:
            headers = {"Idempotency-Key": f"{self.run}-{name}"}
            r = session.post(
                f"{self.base}/v1/tasks",
                json={"title": f"{self.title_prefix}{name}", "type": "noop"},
                headers=headers if self.idempotency_keys else None,
                timeout=self.timeout,
            )
            replay = r.status_code == 200 and r.headers.get("Idempotent-Replayed") == "true"
            if r.status_code == 201 or replay:
                with self._lock:
                    self.created.append(r.json()["data"]["id"])
                    self.replayed += replay
            want, label = (200 if replay else 201), "POST"
        elif kind == 2:
            r = session.get(f"{self.base}/v1/tasks/{self.created[-1]}", timeout=self.timeout)
            want, label = 200, "GET"
        else:
            r = session.get(f"{self.base}/v1/tasks?limit=5", timeout=self.timeout)
            want, label = 200, "LIST"
        self._count("ok" if r.status_code == want else f"{label} {r.status_code}", r.text[:200])

    def __enter__(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self.seconds = time.monotonic() - self._started

    def summary(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"{len(self.created)} tasks created ({self.replayed} through a replay), "
            f"failed {self.failed}: {dict(self.outcomes)}"
        )


def assert_tasks_stored_and_run(
    load: Load, psql: Callable[[str], str], seconds: float = 90
) -> None:
    """Every task the load was answered for (201, or a replay's 200) is stored and the
    workers run it (waiting up to ``seconds``), and none exists twice: a replayed POST
    found the task its first try had created. ``psql(query)``: the rows, ``a|b`` lines."""
    ids = ",".join(map(str, load.created))
    query = f"SELECT status, count(*) FROM tasks WHERE id = ANY('{{{ids}}}') GROUP BY 1"
    deadline = time.monotonic() + seconds
    while True:
        counts = dict(line.split("|") for line in psql(query).split())
        if set(counts) == {"completed"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sum(map(int, counts.values())) == len(load.created), counts
    assert set(counts) == {"completed"}, counts
    query = (
        f"SELECT count(*), count(DISTINCT title) FROM tasks WHERE title LIKE '{load.title_prefix}%'"
    )
    tasks, titles = map(int, psql(query).strip().split("|"))
    assert tasks == titles, (tasks, titles)
    # a failed POST may have created its task (its answer lost): no more than those
    assert len(load.created) <= tasks <= len(load.created) + load.failed, (tasks, load.summary())
