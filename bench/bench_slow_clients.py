#!/usr/bin/env python3
"""Slow and stalled clients against gunicorn directly (not a test): what they cost the API.

    .venv/bin/python bench/bench_slow_clients.py [--workers 2] [--window 40] [--probes 8]

Starts its own PostgreSQL and one ``flowforge api`` (gunicorn, --workers sync workers,
API_READ_TIMEOUT from the environment or its default), then measures:

1. ``slow``: --workers sockets (one per worker) each send a partial request head and then
   one byte every second, never finishing it; meanwhile --probes ``GET /health`` probes
   spread over --window seconds, each allowed 5 s. Twice: ``hold`` (a slow socket the
   server closes stays closed) and ``reconnect`` (the slow client opens a new one at once,
   as an attacker would).
2. ``stalled``: one request at a time, what the server answers and after how long: a body
   that stops before its Content-Length, a body shorter than its Content-Length and then
   a half-close, a 20-hex-digit chunk size, a TLS ClientHello on the plain port, a
   ``SCRIPT_NAME`` header from loopback and an empty POST.

Writes bench/results/slow-clients.json and slow-clients.md (``--label`` names the run and
``--out`` where it goes, so the code before and after a change can be put side by side; to
serve older code, put its ``src`` first on PYTHONPATH and say its commit with --commit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import requests

from flowforge import migrate, tokens
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "


def client_hello() -> bytes:
    """The first flight of a real TLS client (what ``curl https://`` sends first)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        tls.do_handshake()
    return outgoing.read()


def slow_client(port: int, stop: threading.Event, reconnect: bool, opened: list[int]) -> None:
    """One slow socket: a partial head, then a byte a second; reopened if ``reconnect``."""
    while not stop.is_set():
        sock = socket.create_connection(("127.0.0.1", port))
        opened.append(1)
        try:
            sock.sendall(HEAD)
            while not stop.wait(1.0):
                sock.sendall(b"a")
        except OSError:  # the server gave up on it
            pass
        finally:
            sock.close()
        if not reconnect:
            stop.wait()


def probe_health(base: str, probes: int, window: float) -> list[float | None]:
    """``probes`` GET /health spread over ``window`` seconds: each one's seconds, or None."""
    results: list[float | None] = []
    start = time.monotonic()
    for n in range(probes):
        time.sleep(max(0.0, start + n * window / probes - time.monotonic()))
        began = time.monotonic()
        try:
            requests.get(base + "/health", timeout=5).raise_for_status()
            results.append(time.monotonic() - began)
        except requests.RequestException:
            results.append(None)
    return results


def slow_run(base: str, port: int, workers: int, probes: int, window: float, reconnect: bool):
    stop, opened = threading.Event(), []
    threads = [
        threading.Thread(target=slow_client, args=(port, stop, reconnect, opened), daemon=True)
        for _ in range(workers)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every worker has accepted its slow socket
    answered = probe_health(base, probes, window)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    times = [round(a, 3) for a in answered if a is not None]
    return {"answered": len(times), "probes": probes, "seconds": times, "opened": len(opened)}


def raw(port: int, request: bytes, *, half_close: bool = False, limit: float = 60.0) -> dict:
    """Send ``request``, read the answer to the end: its status line and how long it took."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError as exc:
            reply += f"<{type(exc).__name__}>".encode()
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1") or "(closed without an answer)"
    try:
        error = json.loads(body)["error"] or {}
        said = f"{error.get('code')}: {error.get('message')}"
    except (ValueError, KeyError, TypeError):
        said = "(not the envelope) " + body[:60].decode("latin-1")
    return {"status": status, "seconds": round(time.monotonic() - began, 2), "said": said}


def stalled_cases(port: int, token: str) -> dict[str, dict]:
    auth = b"Authorization: Bearer " + token.encode() + b"\r\n"
    post = b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
    body = b'{"title": "cut short"}'
    hello = client_hello()
    return {
        "body stops (Content-Length 100, 22 sent)": raw(
            port, post + b"Content-Length: 100\r\n\r\n" + body
        ),
        "body short, then half-close": raw(
            port, post + b"Content-Length: 100\r\n\r\n" + body, half_close=True
        ),
        "20-hex-digit chunk size": raw(
            port, post + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n" + body
        ),
        # a ClientHello's first segment, up to its first LF byte: gunicorn refuses a bare
        # LF at once, so a whole ClientHello (supported_groups is extension 0x000a) does
        # not show how long a request line without one is waited for
        "TLS ClientHello, first segment (no LF)": raw(port, hello[: hello.index(b"\n")]),
        "TLS ClientHello, whole": raw(port, hello),
        "SCRIPT_NAME header": raw(
            port, b"GET /health HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: /nowhere\r\n\r\n"
        ),
        "empty POST (Content-Length: 0)": raw(port, post + b"Content-Length: 0\r\n\r\n"),
        "empty POST (no length, no body)": raw(port, post + b"\r\n"),
    }


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode
    return out.stdout.strip() + ("+dirty" if dirty else "")


def markdown(result: dict) -> str:
    lines = [
        f"# Slow and stalled clients ({result['label']}, commit {result['commit']}, "
        f"{result['workers']} sync workers, API_READ_TIMEOUT "
        f"{result['read_timeout'] or 'default'})",
        "",
        f"/health probes answered (each allowed 5 s) while {result['workers']} slow sockets "
        f"trickle a byte a second, {result['probes']} probes over {result['window']:.0f} s:",
        "",
        "| slow clients | answered | probe seconds | slow sockets opened |",
        "|---|---:|---|---:|",
    ]
    for mode in ("hold", "reconnect"):
        r = result["slow"][mode]
        secs = ", ".join(f"{s:.2f}" for s in r["seconds"]) or "-"
        lines.append(f"| {mode} | {r['answered']} of {r['probes']} | {secs} | {r['opened']} |")
    lines += ["", "| stalled request | answer | after (s) | error |", "|---|---|---:|---|"]
    for name, r in result["stalled"].items():
        said = r["said"].replace("|", "\\|")
        lines.append(f"| {name} | {r['status']} | {r['seconds']} | {said} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--label", default="run")
    parser.add_argument(
        "--commit", help="the commit the served code is from (default: this checkout's HEAD)"
    )
    parser.add_argument("--out", default=str(RESULTS / "slow-clients"))
    args = parser.parse_args()
    # a SIGTERM (or a background job's SIGINT, ignored there) still stops what was started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    pg = TempPostgres().start()
    work = Path(tempfile.mkdtemp(prefix="ff-slow-"))
    proc = None
    try:
        url = pg.url()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "slow"')
        url = url.rsplit("/", 1)[0] + "/slow"
        migrate.upgrade(load_settings({"DATABASE_URL": url}))
        token = tokens.new_token()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO api_tokens (name, token_hash, scope) VALUES ('bench', %s, 'write')",
                (tokens.token_hash(token),),
            )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("API_")}
        env.pop("JOURNAL_STREAM", None)
        read_timeout = os.environ.get("API_READ_TIMEOUT", "")
        env.update(DATABASE_URL=url, API_HOST="127.0.0.1", API_PORT=str(port),
                   API_WORKERS=str(args.workers), LOG_LEVEL="info")  # fmt: skip
        if read_timeout:
            env["API_READ_TIMEOUT"] = read_timeout
        with open(work / "api.log", "wb") as log:
            proc = subprocess.Popen([str(BIN / "flowforge"), "api"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(base + "/health", timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the API did not start: see {work / 'api.log'}") from None
                time.sleep(0.2)
        result = {
            "label": args.label,
            "commit": args.commit or commit(),
            "workers": args.workers,
            "read_timeout": read_timeout,
            "probes": args.probes,
            "window": args.window,
            "slow": {},
        }
        for mode in ("hold", "reconnect"):
            print(f"slow clients, {mode} ...", flush=True)
            result["slow"][mode] = slow_run(base, port, args.workers, args.probes, args.window,
                                            reconnect=mode == "reconnect")  # fmt: skip
            time.sleep(35)  # let gunicorn replace any worker it killed before the next part
        print("stalled requests ...", flush=True)
        result["stalled"] = stalled_cases(port, token)
        with psycopg.connect(url) as conn:
            result["tasks_stored"] = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        pg.destroy()
    shutil.rmtree(work)  # the API's log, kept only when a run fails
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result) + f"\ntasks stored by the stalled requests: {result['tasks_stored']}\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
