#!/usr/bin/env python3
"""`make dev`: FlowForge on this machine against a throwaway PostgreSQL.

Starts a private PostgreSQL cluster, migrates it, then runs `flowforge api` and
`flowforge worker` in the foreground (their logs interleaved on stdout, readable lines:
LOG_FORMAT=text unless set) until Ctrl-C or SIGTERM, and removes the cluster. API_PORT
(8080) and the other variables of README's configuration table are honoured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flowforge.devdb import TempPostgres

FLOWFORGE = str(Path(sys.executable).parent / "flowforge")


def main() -> int:
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    pg = TempPostgres().start()
    env = {**os.environ, "DATABASE_URL": pg.url()}
    env.setdefault("API_HOST", "127.0.0.1")
    env.setdefault("LOG_FORMAT", "text")  # readable lines at a terminal
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([FLOWFORGE, "migrate"], env=env, check=True)
        # Auth stays on, as deployed: a write token for the developer, shown in the banner.
        token = subprocess.run(
            [FLOWFORGE, "token", "create", "dev", "--scope", "write"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        procs = [subprocess.Popen([FLOWFORGE, cmd], env=env) for cmd in ("api", "worker")]
        port = env.get("API_PORT", "8080")
        api_url = f"http://{env['API_HOST']}:{port}"
        print(
            f"\nFlowForge: API on {api_url}  "
            f"DATABASE_URL={pg.url()}  (Ctrl-C stops everything)\n"
            f"A write token (also `flowforge token create NAME --scope read|write`):\n"
            f"  export API_URL={api_url}\n"
            f"  export API_TOKEN={token}\n"
            f'  curl -H "Authorization: Bearer $API_TOKEN" $API_URL/v1/tasks\n',
            file=sys.stderr,
            flush=True,
        )
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.destroy()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stop else 0


if __name__ == "__main__":
    sys.exit(main())
