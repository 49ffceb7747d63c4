#!/usr/bin/env python3
"""Log path micro-benchmark (not a test): CPU per API access line, FlowForge's logging as
configured by ``flowforge.logs.configure_logging`` beside the reference it replaced,
python-json-logger's ``OrjsonFormatter`` used the generic way (the same arguments as
before, with a journal handler that walks the record a second time for its fields).

    .venv/bin/python bench/bench_log.py [--lines 20000] [--rounds 5]

Cases, each beside its reference, in alternating order per round:
- ``format``: the formatter alone on one access record.
- ``stdout, log.info``: ``log.info`` of the access line (message, six ``extra`` fields),
  through the root handler to a file (the JSON on stdout path).
- ``journal, log.info``: the same ``log.info`` through the journald handler, its ``send``
  replaced by a no-op (no journald on a build machine: the figure is the Python side).
- ``stdout/journal, log_fields``: the access line as the API writes it, through
  ``logs.log_fields`` (no LogRecord), beside FlowForge's own ``log.info`` of it.
Process CPU time per line, median over rounds; the ratio new / reference is paired per
round. Writes bench/results/log.json and log.md with the commit and the load average.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

from flowforge import logs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ACCESS = {
    "request_id": "3f2b8c0e9a7d4e51b6c2d8f0a1e3b5c7",
    "method": "GET",
    "path": "/v1/tasks/123456",
    "status": 200,
    "duration_ms": 1.234,
    "remote_addr": "127.0.0.1",
}


def reference_formatter(service: str) -> logging.Formatter:
    """The formatter flowforge.logs used before its one-pass formatter: the library's."""
    return OrjsonFormatter(
        "{message}{levelname}{name}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": service},
        timestamp=True,
    )


class ReferenceJournalHandler(logs.JournalHandler):
    """The journal handler as it was: format, then walk the record again for fields."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {
                logs.handlers._JOURNAL_FIELD.sub("_", key.upper())[:64]: str(value)
                for key, value in record.__dict__.items()
                if key not in logs.fields._RESERVED
                and not key.startswith("_")
                and value is not None
            }
            self._send(
                message=self.format(record),
                priority=logs.handlers._PRIORITY.get(record.levelno, 2),
                syslog_identifier=self._identifier,
                service=self._service,
                logger=record.name,
                **{k.lower(): v for k, v in fields.items()},
            )
        except Exception:
            self.handleError(record)


def no_send(**fields: Any) -> None:
    """journald's send, minus the socket."""


def install(handler: logging.Handler) -> None:
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def cpu_per_line(lines: int) -> float:
    log = logging.getLogger("flowforge.api")
    fields = ACCESS
    started = time.process_time()
    for _ in range(lines):
        log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)
    return (time.process_time() - started) / lines * 1e6


def cpu_per_direct_line(lines: int) -> float:
    """The access line as the API writes it now: ``logs.log_fields``, no LogRecord."""
    log = logging.getLogger("flowforge.api")
    fields = ACCESS
    log_fields, info = logs.log_fields, logging.INFO
    started = time.process_time()
    for _ in range(lines):
        message = f"{fields['method']} {fields['path']} {fields['status']}"
        log_fields(log, info, message, fields)
    return (time.process_time() - started) / lines * 1e6


def format_cost(formatter: logging.Formatter, lines: int) -> float:
    record = logging.getLogger("flowforge.api").makeRecord(
        "flowforge.api", logging.INFO, "(unknown file)", 0, "GET /v1/tasks/123456 200",
        None, None, extra=ACCESS,
    )  # fmt: skip
    started = time.process_time()
    for _ in range(lines):
        formatter.format(record)
    return (time.process_time() - started) / lines * 1e6


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src", "bench"],
                           capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return out.stdout.strip() + ("+dirty" if dirty else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load_start = os.getloadavg()
    logs.configure_logging("api", "info")  # the documented optimisations (no caller frames)
    work = Path(tempfile.mkdtemp(prefix="flowforge-benchlog-"))
    sink = open(work / "lines.jsonl", "w")  # noqa: SIM115
    new_json, ref_json = logs.json_formatter("api"), reference_formatter("api")
    sample_new = json.loads(new_json.format(logging.makeLogRecord({**ACCESS, "msg": "x"})))
    sample_ref = json.loads(ref_json.format(logging.makeLogRecord({**ACCESS, "msg": "x"})))
    assert set(sample_new) == set(sample_ref), (sample_new, sample_ref)  # no field lost

    def stdout_case(formatter: logging.Formatter, direct: bool = False) -> float:
        handler = logs.StreamLineHandler(sink)
        handler.setFormatter(formatter)
        install(handler)
        logs._direct = handler if direct else None
        return (cpu_per_direct_line if direct else cpu_per_line)(args.lines)

    def journal_case(
        cls: type[logs.JournalHandler], formatter: logging.Formatter, direct: bool = False
    ) -> float:
        handler = cls("api")
        handler._send = no_send
        handler.setFormatter(formatter)
        install(handler)
        logs._direct = handler if direct else None
        return (cpu_per_direct_line if direct else cpu_per_line)(args.lines)

    # case: (FlowForge now, its reference, what the reference is)
    library = "python-json-logger's formatter, log.info"
    cases = {
        "format": (
            lambda: format_cost(new_json, args.lines),
            lambda: format_cost(ref_json, args.lines),
            "python-json-logger's formatter",
        ),
        "stdout, log.info": (
            lambda: stdout_case(new_json),
            lambda: stdout_case(ref_json),
            library,
        ),
        "journal, log.info": (
            lambda: journal_case(logs.JournalHandler, new_json),
            lambda: journal_case(ReferenceJournalHandler, ref_json),
            library,
        ),
        "stdout, log_fields (the API's access line)": (
            lambda: stdout_case(new_json, direct=True),
            lambda: stdout_case(new_json),
            "FlowForge's log.info",
        ),
        "journal, log_fields (the API's access line)": (
            lambda: journal_case(logs.JournalHandler, new_json, direct=True),
            lambda: journal_case(logs.JournalHandler, new_json),
            "FlowForge's log.info",
        ),
    }
    runs: dict[str, dict[str, list[float]]] = {c: {"new": [], "reference": []} for c in cases}
    for rnd in range(args.rounds):
        for name, (new, ref, _) in cases.items():
            order = [("new", new), ("reference", ref)]
            if rnd % 2:
                order.reverse()
            for which, run in order:
                run()  # warm
                runs[name][which].append(round(run(), 3))
        print(f"round {rnd + 1}: {json.dumps(runs)}", file=sys.stderr, flush=True)
    sink.close()
    logs.configure_logging("api", "info")

    summary = {}
    for name, r in runs.items():
        paired = [n / ref for n, ref in zip(r["new"], r["reference"], strict=True)]
        summary[name] = {
            "reference": cases[name][2],
            "new_us_median": statistics.median(r["new"]),
            "reference_us_median": statistics.median(r["reference"]),
            "ratio_new_to_reference_paired": [round(x, 3) for x in paired],
            "ratio_new_to_reference_paired_median": round(statistics.median(paired), 3),
            "runs": r,
        }
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {"lines_per_run": args.lines, "rounds": args.rounds},
        "results": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        f"# Log path micro-benchmark ({report['when']}, commit {report['commit']})",
        "",
        f"CPU per API access line (process time), median of {args.rounds} rounds of "
        f"{args.lines:,} lines, rounds alternating; load average at start "
        f"{report['machine']['load_average_at_start']}, at end "
        f"{report['machine']['load_average_at_end']} on {os.cpu_count()} cores.",
        "",
        "| case | FlowForge us | reference | reference us | FlowForge / reference, paired median |",
        "|---|---:|---|---:|---:|",
    ]
    for name, s in summary.items():
        md.append(
            f"| {name} | {s['new_us_median']:.2f} | {s['reference']} | "
            f"{s['reference_us_median']:.2f} | {s['ratio_new_to_reference_paired_median']:.2f} |"
        )
    md += [
        "",
        "format: the formatter alone; stdout: the access line to a file; journal: the same "
        "through the journald handler with a no-op send. log.info makes a LogRecord and "
        "runs the handler chain; log_fields (what the API calls) formats the fields "
        "straight to a line.",
    ]
    (RESULTS / "log.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
