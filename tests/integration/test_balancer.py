"""The balancer role's flowforge-lb (drain, ready, status through HAProxy's runtime socket),
against a local Debian HAProxy in front of two small HTTP servers: a drain waits for the
requests in flight and leaves the server in MAINT, ready waits for a passing health check,
and a server that was DOWN before the drain is handed back to its checks at once."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jinja2
import pytest
import requests

from flowforge.devdb import free_port

ROLE = Path(__file__).resolve().parents[2] / "deploy" / "ansible" / "roles" / "balancer"
BACKEND = "flowforge_api"

pytestmark = pytest.mark.skipif(
    not (shutil.which("haproxy") and shutil.which("socat")),
    reason="needs Debian's haproxy and socat (make test installs them)",
)


class Api(BaseHTTPRequestHandler):
    """GET /health answers 200 (503 once ``sick`` is set); GET /slow takes a second."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        sick = getattr(self.server, "sick", False) and self.path == "/health"
        body = self.server.server_address[1].to_bytes(4, "big")  # which server answered
        self.send_response(503 if sick else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Balancer:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.socket = tmp / "admin.sock"
        self.port = free_port()
        self.servers = {}
        for name in ("api-1", "api-2"):
            server = ThreadingHTTPServer(("127.0.0.1", free_port()), Api)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[name] = server
        backends = "".join(
            f"    server {name} 127.0.0.1:{s.server_address[1]}\n"
            for name, s in self.servers.items()
        )
        config = tmp / "haproxy.cfg"
        config.write_text(
            f"global\n    stats socket {self.socket} mode 600 level admin\n"
            "defaults\n    mode http\n    timeout connect 2s\n"
            "    timeout client 10s\n    timeout server 10s\n"
            f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend {BACKEND}\n"
            f"backend {BACKEND}\n    balance leastconn\n"
            "    option httpchk\n    http-check send meth GET uri /health ver HTTP/1.1 hdr Host x\n"
            "    default-server check inter 200ms fall 2 rise 2\n" + backends
        )
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)])
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        script = jinja2.Template((ROLE / "templates" / "flowforge-lb.j2").read_text()).render(
            ansible_managed="rendered by tests/test_balancer.py",
            balancer_socket=str(self.socket),
            balancer_backend_name=BACKEND,
        )
        self.script = tmp / "flowforge-lb"
        self.script.write_text(script)
        self.script.chmod(0o755)

    def lb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.script), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "FLOWFORGE_LB_STATE": str(self.tmp / "state")},
        )

    def status(self) -> dict[str, str]:
        out = self.lb("status")
        assert out.returncode == 0, out.stderr
        return {
            line.split()[0]: line.split(" ", 1)[1].rsplit(" sessions=", 1)[0]
            for line in out.stdout.splitlines()
        }

    def wait_status(self, want: dict[str, str], seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while (now := self.status()) != want:
            assert time.monotonic() < deadline, now
            time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    balancer = Balancer(tmp_path)
    try:
        balancer.wait_status({"api-1": "UP", "api-2": "UP"})
        yield balancer
    finally:
        balancer.close()


def test_drain_waits_for_requests_in_flight_then_ready_waits_for_a_check(
    balancer: Balancer,
) -> None:
    base = f"http://127.0.0.1:{balancer.port}"
    port_1 = balancer.servers["api-1"].server_address[1]
    out = balancer.lb("drain", "api-2")  # nothing in flight: at once
    assert out.returncode == 0 and out.stdout.strip() == "api-2: MAINT", out
    # A slow request in flight on api-1 while it is drained: the drain waits for its answer.
    answers: list[requests.Response] = []
    slow = threading.Thread(target=lambda: answers.append(requests.get(f"{base}/slow")))
    slow.start()
    time.sleep(0.3)
    started = time.monotonic()
    out = balancer.lb("drain", "api-1", "10")
    drained = time.monotonic() - started
    slow.join()
    assert out.returncode == 0 and out.stdout.strip() == "api-1: MAINT", out
    assert answers[0].status_code == 200 and int.from_bytes(answers[0].content) == port_1
    assert 0.3 < drained < 5, drained
    assert balancer.status() == {"api-1": "MAINT", "api-2": "MAINT"}
    assert requests.get(f"{base}/health").status_code == 503  # HAProxy: no server left

    # ready returns once HAProxy's own check passed (not at "UP 1/2" right after MAINT).
    for name in ("api-1", "api-2"):
        out = balancer.lb("ready", name, "10")
        assert out.returncode == 0 and out.stdout.strip() == f"{name}: UP", out
    assert balancer.status() == {"api-1": "UP", "api-2": "UP"}
    assert requests.get(f"{base}/health").status_code == 200


def test_ready_hands_a_server_that_was_down_back_to_its_checks(balancer: Balancer) -> None:
    balancer.servers["api-2"].sick = True  # type: ignore[attr-defined]
    balancer.wait_status({"api-1": "UP", "api-2": "DOWN"})
    assert balancer.lb("drain", "api-2", "5").stdout.strip() == "api-2: MAINT"
    started = time.monotonic()
    out = balancer.lb("ready", "api-2", "30")
    assert out.returncode == 0 and "it was DOWN before the drain" in out.stdout, out
    assert time.monotonic() - started < 5  # no waiting for a host that is not up yet
    balancer.servers["api-2"].sick = False  # type: ignore[attr-defined]
    balancer.wait_status({"api-1": "UP", "api-2": "UP"})

    # A server that stays sick after a drain from UP: ready fails, one line, exit 1.
    assert balancer.lb("drain", "api-1", "5").returncode == 0
    balancer.servers["api-1"].sick = True  # type: ignore[attr-defined]
    out = balancer.lb("ready", "api-1", "2")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out
    assert "not UP after 2s" in out.stderr


def test_unknown_server_and_command(balancer: Balancer) -> None:
    out = balancer.lb("drain", "api-9")
    assert out.returncode == 2 and out.stderr.strip() == f"flowforge-lb: no server {BACKEND}/api-9"
    out = balancer.lb("restart")
    assert out.returncode == 2 and out.stderr.startswith("usage: flowforge-lb")
