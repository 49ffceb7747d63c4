"""``Client``: the task routes of the API as Python methods, typed results, retries."""

from __future__ import annotations

import builtins
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..api.envelope import IDEMPOTENCY_HEADER
from ..domain.validation import PAGE_LIMIT_MAX
from .errors import WaitTimedOut
from .task import Task
from .transport import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT, Transport

TASKS = "/v1/tasks"
# wait() polls GET: first after this, then twice as long each time, up to WAIT_POLL_MAX.
WAIT_POLL_FIRST = 0.05  # seconds
WAIT_POLL_MAX = 1.0


class Client:
    """A FlowForge API at ``url`` (``https://HOST``, or ``$API_URL``) with a token.

    Reads are retried on network errors and 502/503/504 (``retries`` times, backoff from
    ``backoff`` seconds, doubled each time); creates too, under an automatic
    Idempotency-Key, so a retried create never makes a second task. Cancel and retry are
    retried only when the request never reached the API. Errors raise
    ``flowforge.client.FlowForgeError`` subclasses (docs/client.md).
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        self._http = Transport(url, token, timeout=timeout, retries=retries, backoff=backoff)

    def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Task:
        """A new task (POST /v1/tasks): ``title`` and any other task field (``type``,
        ``payload``, ``queue``, ``priority``, ``run_at`` as an aware datetime...). An
        Idempotency-Key is made when none is given. A replay (the key seen before) answers
        the first task."""
        return Task.from_json(self._create(TASKS, fields, idempotency_key))

    def create_batch(
        self, tasks: Iterable[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[Task]:
        """Up to 1,000 tasks in one transaction (POST /v1/tasks/batch), in the order given:
        all are created or none (a ValidationFailed names ``tasks[i].field``)."""
        body = {"tasks": [dict(t) for t in tasks]}
        return [Task.from_json(t) for t in self._create(f"{TASKS}/batch", body, idempotency_key)]

    def get(self, task_id: int) -> Task:
        """The task now (NotFound if there is none)."""
        return Task.from_json(self._get(f"{TASKS}/{int(task_id)}").body["data"])

    def wait(self, task_id: int, timeout: float = 60.0) -> Task:
        """The task once it is final (completed, failed or cancelled), polling GET with a
        short, growing interval; WaitTimedOut (its ``task`` as last seen) after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        interval = WAIT_POLL_FIRST
        while True:
            task = self.get(task_id)
            if task.final:
                return task
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimedOut(f"task {task_id} still {task.status} after {timeout} s", task)
            time.sleep(min(interval, left))
            interval = min(interval * 2, WAIT_POLL_MAX)

    def cancel(self, task_id: int) -> Task:
        """Cancels it: a pending task at once (``cancelled``), a running one is flagged
        (``cancel_requested``, its worker told). Conflict if it has already ended."""
        return self._post(f"{TASKS}/{int(task_id)}/cancel")

    def retry(self, task_id: int) -> Task:
        """Runs a finished task again (pending, attempts 0). Conflict while it is pending
        or processing."""
        return self._post(f"{TASKS}/{int(task_id)}/retry")

    def list(self, **filters: Any) -> Iterator[Task]:
        """Every task matching ``filters`` (``status``, ``type``, ``queue``), newest first,
        page after page through the API's cursors (``limit``: the page size, 100 unless
        given). An unknown filter is the API's BadRequest."""
        if "fields" in filters or "cursor" in filters or "page" in filters:
            raise ValueError("list() takes filters and limit only: it pages by itself")
        query = {"limit": PAGE_LIMIT_MAX, **filters}
        while True:
            body = self._get(TASKS, query).body
            yield from (Task.from_json(t) for t in body["data"])
            cursor = body["meta"].get("next_cursor")
            if not cursor:
                return
            query = {**query, "cursor": cursor}

    def _get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        return self._http.request("GET", path, query=query, replayable=True)

    def _post(self, path: str) -> Task:
        answer = self._http.request("POST", path, replayable=False)
        return Task.from_json(answer.body["data"])

    def _create(self, path: str, body: Any, key: str | None) -> Any:
        # One key for every attempt of this call: the API answers a retry with what the
        # first attempt made, if it got that far.
        headers = {IDEMPOTENCY_HEADER: key or str(uuid.uuid4())}
        answer = self._http.request("POST", path, body=body, headers=headers, replayable=True)
        return answer.body["data"]
