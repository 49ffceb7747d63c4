"""A task's attempt history in SQL: where each attempt's entry is written, and how the API
reads them back (GET /v1/tasks/{id}/attempts).

Two places, one history (migrations 0010 and 0014 say why):
- ``tasks.attempt_log``, a jsonb array, holds the attempts after which the task went on
  (retried, snoozed, given back, its lease lost) and those the reaper or a shutdown ended;
- the ``last_attempt_*`` columns hold the attempt that ended the task, written by the
  worker's finishing UPDATE. Most tasks end on their first attempt: a few plain columns
  cost that UPDATE next to nothing, where building and appending a jsonb entry cost the
  backend about 6 us and 330 bytes of WAL per task (bench/results/worker-cpu-paired.md).

The columns are set only while the task is finished. Whatever moves it on (a retry, a
PUT that changes its status) first folds them into the log as an entry, so an attempt is
never shown twice nor lost. At most TASK_ATTEMPTS_KEPT entries are kept in all, the
oldest dropped: every write of the worker trims the log, and one that fills the columns
leaves room in it for the fold.
"""

from __future__ import annotations

# What an entry holds, in the API's order.
ATTEMPT_FIELDS = (
    "attempt",
    "worker",
    "started_at",
    "finished_at",
    "outcome",
    "error",
    "traceback",
    "cpu_seconds",
    "max_rss_bytes",
    "exit_signal",
)

# The columns of the attempt that ended the task (migration 0014), and the entry's fields
# they hold; the others come from the task's own columns (attempts, worker, started_at,
# completed_at).
LAST_ATTEMPT_COLUMNS = {
    "outcome": "last_attempt_outcome",
    "error": "last_attempt_error",
    "traceback": "last_attempt_traceback",
    "cpu_seconds": "last_attempt_cpu_seconds",
    "max_rss_bytes": "last_attempt_max_rss_bytes",
    "exit_signal": "last_attempt_exit_signal",
}


def _entry(values: dict[str, str]) -> str:
    """An entry as a jsonb object: ``values`` maps ATTEMPT_FIELDS to SQL expressions."""
    pairs = ", ".join(f"'{name}', {values[name]}" for name in ATTEMPT_FIELDS)
    return f"jsonb_build_object({pairs})"


def room_for_one() -> str:
    """``attempt_log`` (row ``t``) less its oldest entries, so that one more keeps it
    within %(kept)s (all of the excess at once when the setting was lowered)."""
    return """(CASE WHEN jsonb_array_length(t.attempt_log) < %(kept)s THEN t.attempt_log
              ELSE coalesce((SELECT jsonb_agg(e ORDER BY i)
                             FROM jsonb_array_elements(t.attempt_log) WITH ORDINALITY AS a(e, i)
                             WHERE i > jsonb_array_length(t.attempt_log) - %(kept)s + 1),
                            '[]') END)"""


def appended(outcome: str, error: str, details: str = "NULL, NULL, NULL, NULL") -> str:
    """``tasks.attempt_log`` (row ``t``) with the entry of the attempt being written
    appended. ``outcome`` and ``error`` are SQL expressions; ``details`` the traceback,
    CPU seconds, peak RSS and exit signal, where the worker has them."""
    traceback, cpu, rss, signal = details.split(", ")
    entry = _entry(
        {
            "attempt": "t.attempts",
            "worker": "t.worker",
            "started_at": "t.started_at",
            "finished_at": "now()",
            "outcome": outcome,
            "error": error,
            "traceback": traceback,
            "cpu_seconds": cpu,
            "max_rss_bytes": rss,
            "exit_signal": signal,
        },
    )
    return f"{room_for_one()}\n           || {entry}"


# The entry the last_attempt_* columns describe (unqualified: the API's statements name
# the table without an alias).
_LAST_ENTRY = {
    "attempt": "attempts",
    "worker": "worker",
    "started_at": "started_at",
    "finished_at": "completed_at",
    **LAST_ATTEMPT_COLUMNS,
}
LAST_ENTRY = _entry(_LAST_ENTRY)


def folded(when: str) -> str:
    """SET clauses for an API statement that moves a task on: when ``when`` holds, the
    last_attempt_* columns become an entry of attempt_log and are cleared."""
    # No trimming: the finishing UPDATE left the log room for this one (room_for_one).
    log = f"""attempt_log = CASE WHEN ({when}) AND last_attempt_outcome IS NOT NULL
        THEN attempt_log || {LAST_ENTRY} ELSE attempt_log END"""
    cleared = ",\n    ".join(
        f"{column} = CASE WHEN {when} THEN NULL ELSE {column} END"
        for column in LAST_ATTEMPT_COLUMNS.values()
    )
    return f"{log},\n    {cleared}"


def last_attempt(ends: str, values: dict[str, str]) -> str:
    """SET clauses for the worker's finishing UPDATE: the columns take the attempt's
    ``values`` (SQL expressions by field) when ``ends`` (it ended the task), else NULL
    (the entry went to the log)."""
    return ",\n        ".join(
        f"{column} = CASE WHEN {ends} THEN {values[field]} END"
        for field, column in LAST_ATTEMPT_COLUMNS.items()
    )


_RECORD = ", ".join(
    f"{name} {kind}"
    for name, kind in zip(
        ATTEMPT_FIELDS,
        ("int", "text", "timestamptz", "timestamptz", "text", "text", "text", "float8",
         "bigint", "int"),
        strict=True,
    )
)  # fmt: skip
_FIELDS = ", ".join(f"a.{name}" for name in ATTEMPT_FIELDS)
_LAST_FIELDS = ", ".join(f"t.{_LAST_ENTRY[name]}" for name in ATTEMPT_FIELDS)

# A task's attempts, oldest first: one row per attempt, or one row of NULLs for a task
# with none yet (no row: no such task). The log's entries, then the columns' (last).
GET_ATTEMPTS = f"""
SELECT {_FIELDS}
FROM tasks t
LEFT JOIN LATERAL (
    SELECT {", ".join(ATTEMPT_FIELDS)}, ordinality AS n
    FROM ROWS FROM (jsonb_to_recordset(t.attempt_log) AS ({_RECORD})) WITH ORDINALITY
    UNION ALL
    SELECT {_LAST_FIELDS}, 9223372036854775807
    WHERE t.last_attempt_outcome IS NOT NULL
) AS a ON true
WHERE t.id = %(id)s
ORDER BY a.n
"""
