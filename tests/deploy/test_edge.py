"""The edge of the deployed host (role nginx), seen from outside as a client would: TLS
verified with the controller's CA, the redirect, gunicorn unreachable, nginx's own errors as
JSON envelopes with request IDs, the rate limit, and slow clients that cannot starve /health.

Runs after test_deploy.py on the same session host (so also after its second playbook run).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import socket
import ssl
import statistics
import threading
import time
import uuid

import pytest
import requests

from .conftest import API_PORT, CA_CERT, TestHost

pytestmark = pytest.mark.deploy

ENVELOPE_KEYS = {"data", "error"}


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # straight to the test host, whatever proxy the environment names
    session.verify = str(CA_CERT)
    return session


https = _session()


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CA_CERT))


def _tls(ip: str, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    """A verified TLS connection to the host's port 443."""
    raw = socket.create_connection((ip, 443), timeout=5)
    return (context or _context()).wrap_socket(raw, server_hostname=ip)


def _assert_envelope(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE_KEYS and body["data"] is None, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert body["error"]["details"] is None
    return body


def _api_journal(testhost: TestHost, request_id: str) -> list[dict]:
    out = testhost.sh(f"journalctl --no-pager -o json -u flowforge-api REQUEST_ID={request_id}")
    return [json.loads(line) for line in out.splitlines()]


def test_https_verifies_with_the_controller_ca(testhost: TestHost) -> None:
    response = https.get(f"{testhost.api}/health", timeout=5)
    assert response.status_code == 200 and response.json()["error"] is None
    # the certificate is the private CA's, not one any public CA vouches for
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{testhost.api}/health", timeout=5, verify=True)
    # TLS 1.3 by default; a TLS 1.2-only client gets a forward-secret AEAD cipher
    with _tls(testhost.ip) as tls:
        assert tls.version() == "TLSv1.3"
    tls12 = _context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with _tls(testhost.ip, tls12) as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0].startswith("ECDHE-") and "GCM" in tls.cipher()[0]
    # nothing older is offered (the site's own setting, over Debian's nginx.conf default)
    config = testhost.sh("nginx -T 2>/dev/null")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in config


def test_port_80_redirects_to_https(testhost: TestHost) -> None:
    response = https.post(
        f"http://{testhost.ip}/v1/tasks?limit=1", json={}, allow_redirects=False, timeout=5
    )
    assert response.status_code == 308  # the method and body are kept
    assert response.headers["Location"] == f"https://{testhost.ip}/v1/tasks?limit=1"


def test_gunicorn_is_not_reachable_from_outside(testhost: TestHost) -> None:
    with pytest.raises(OSError), socket.create_connection((testhost.ip, API_PORT), timeout=3):
        pass
    listening = testhost.sh(f"ss -Hltn 'sport = :{API_PORT}'")
    addresses = {line.split()[3] for line in listening.splitlines()}
    assert addresses == {f"127.0.0.1:{API_PORT}"}, listening
    env = testhost.sh("cat /etc/flowforge/flowforge.env")
    assert "\nAPI_HOST=127.0.0.1\n" in env


def test_request_id_from_nginx_reaches_the_app_journal(testhost: TestHost) -> None:
    response = https.get(f"{testhost.api}/health", headers={"X-Request-ID": "not sane!"}, timeout=5)
    rid = response.headers["X-Request-ID"]
    assert rid != "not sane!" and len(rid) == 32 and int(rid, 16) >= 0  # nginx's $request_id
    deadline = time.monotonic() + 10
    while not (entries := _api_journal(testhost, rid)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert entries, f"no flowforge-api journal line with REQUEST_ID={rid}"


def _token(testhost: TestHost, scope: str) -> tuple[str, str]:
    """A new token (name, token) made as an operator makes one: root runs `flowforge`."""
    name = f"edge-{scope}-{uuid.uuid4().hex[:8]}"
    return name, testhost.sh(f"flowforge token create {name} --scope {scope}").strip()


def test_tokens_through_the_edge(testhost: TestHost) -> None:
    tasks = f"{testhost.api}/v1/tasks"
    rid = f"anon-{uuid.uuid4().hex[:12]}"
    anonymous = https.get(tasks, headers={"X-Request-ID": rid}, timeout=5)
    _assert_envelope(anonymous, 401, "unauthorized")
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.headers["X-Request-ID"] == rid  # the app's answer, through nginx
    _, read = _token(testhost, "read")
    rid = f"reader-{uuid.uuid4().hex[:12]}"
    refused = https.post(
        tasks,
        json={"title": "not allowed"},
        headers={"Authorization": f"Bearer {read}", "X-Request-ID": rid},
        timeout=5,
    )
    _assert_envelope(refused, 403, "forbidden")
    assert refused.headers["X-Request-ID"] == rid
    name, write = _token(testhost, "write")
    auth = {"Authorization": f"Bearer {write}"}
    created = https.post(tasks, json={"title": "through the edge"}, headers=auth, timeout=5)
    assert created.status_code == 201, created.text
    # revoked: refused by every API process within 5 s
    testhost.sh(f"flowforge token revoke {name}")
    revoked_at = time.monotonic()
    while (status := https.get(tasks, headers=auth, timeout=5).status_code) == 200:
        assert time.monotonic() - revoked_at < 10, "the revoked token still works"
        time.sleep(0.25)
    assert status == 401
    testhost.figures["token_refused_after_revoke_seconds"] = round(time.monotonic() - revoked_at, 2)


def test_metrics_are_for_loopback_and_monitoring_hosts_only(testhost: TestHost) -> None:
    rid = f"metrics-{uuid.uuid4().hex[:12]}"
    outside = https.get(f"{testhost.api}/metrics", headers={"X-Request-ID": rid}, timeout=5)
    _assert_envelope(outside, 403, "forbidden")
    assert outside.headers["X-Request-ID"] == rid
    inside = testhost.sh(
        'python3 -c "import ssl, urllib.request; '
        "ctx = ssl.create_default_context(cafile='/etc/nginx/flowforge-tls/ca.crt'); "
        "print(urllib.request.urlopen('https://127.0.0.1/metrics', context=ctx).read().decode())\""
    )
    assert "flowforge_http_requests_total" in inside


def test_deploy_check_token_is_root_only_and_never_printed(testhost: TestHost) -> None:
    path = "/etc/flowforge/deploy-check.token"
    token_file = testhost.host.file(path)
    assert (token_file.user, token_file.mode) == ("root", 0o600)
    token = token_file.content_string.strip()
    assert len(token) >= 32
    assert "deploy-check-" in testhost.sh("flowforge token list")
    for run in testhost.runs:
        assert token not in run.output


def test_oversized_body_is_refused_by_nginx_with_an_envelope(testhost: TestHost) -> None:
    rid = f"big-{uuid.uuid4().hex[:12]}"
    response = https.post(
        f"{testhost.api}/v1/tasks",
        data=b"x" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/json", "X-Request-ID": rid},
        timeout=10,
    )
    _assert_envelope(response, 413, "payload_too_large")
    assert response.headers["X-Request-ID"] == rid
    # nginx answered: gunicorn never saw the request, nginx's log has it
    assert _api_journal(testhost, rid) == []
    assert " 413 " in testhost.sh(f"grep 'request_id={rid}' /var/log/nginx/flowforge-access.log")


def test_unparsable_request_gets_an_envelope_from_nginx(testhost: TestHost) -> None:
    with _tls(testhost.ip) as tls:
        tls.sendall(b"NOT A REQUEST\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 400"), lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json" and headers["x-request-id"]
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_burst_over_the_rate_limit_gets_429_envelopes_per_token(testhost: TestHost) -> None:
    token = f"Bearer burst-{uuid.uuid4().hex}"  # its own bucket: other tests are not limited

    def burst(worker: int) -> list[requests.Response]:
        session = _session()
        return [
            session.get(
                f"{testhost.api}/health",
                headers={"Authorization": token, "X-Request-ID": f"burst-{worker}-{i}"},
                timeout=10,
            )
            for i in range(50)
        ]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = [r for batch in pool.map(burst, range(8)) for r in batch]
    seconds = time.monotonic() - started
    limited = [r for r in responses if r.status_code == 429]
    passed = [r for r in responses if r.status_code != 429]
    print(
        f"\n{len(responses)} requests in {seconds:.2f} s: {len(passed)} passed, {len(limited)} 429"
    )
    # 50 r/s with a burst of 100: at most 100 + 50/s (+1 for the first) get through
    assert len(passed) <= 101 + 50 * seconds + 1
    assert limited
    for response in limited[:5]:
        _assert_envelope(response, 429, "rate_limited")
        assert response.headers["Retry-After"] == "1"
        assert response.headers["X-Request-ID"].startswith("burst-")
    # the bucket is the token's: another token (or none) from the same address still passes
    other = https.get(
        f"{testhost.api}/health", headers={"Authorization": "Bearer other"}, timeout=5
    )
    assert other.status_code == 200
    assert https.get(f"{testhost.api}/health", timeout=5).status_code == 200


async def _slow_clients(ip: str, count: int, seconds: float, stats: dict[str, int]) -> None:
    """count connections that send a request header one byte a second until the deadline,
    reconnecting whenever nginx cuts one off (client_header_timeout)."""
    context = _context()
    deadline = time.monotonic() + seconds

    async def one() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, 443, ssl=context, server_hostname=ip), 10
                )
            except (TimeoutError, OSError):
                stats["connect_failures"] += 1
                await asyncio.sleep(1)
                continue
            stats["connections"] += 1
            closed = asyncio.ensure_future(reader.read(65536))
            try:
                writer.write(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
                while time.monotonic() < deadline and not closed.done():
                    await asyncio.sleep(1)
                    writer.write(b"a")
                    await writer.drain()
                if closed.done():
                    stats["cut_by_nginx"] += 1
            except OSError:
                stats["cut_by_nginx"] += 1
            finally:
                closed.cancel()
                writer.close()

    await asyncio.gather(*(one() for _ in range(count)))


def test_slow_clients_do_not_starve_health(testhost: TestHost) -> None:
    count, seconds = 200, 20.0
    stats = {"connections": 0, "connect_failures": 0, "cut_by_nginx": 0}
    attack = threading.Thread(
        target=lambda: asyncio.run(_slow_clients(testhost.ip, count, seconds, stats))
    )
    attack.start()
    time.sleep(3)  # let the slow connections open
    established = int(testhost.sh("ss -Htn state established 'sport = :443' | wc -l"))
    latencies: list[float] = []
    failures: list[str] = []
    context = _context()
    deadline = time.monotonic() + seconds - 5
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:  # a new connection (and TLS handshake) per request, like a fresh client
            conn = http.client.HTTPSConnection(testhost.ip, 443, context=context, timeout=5)
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                failures.append(f"status {response.status}")
        except OSError as exc:
            failures.append(repr(exc))
        latencies.append((time.monotonic() - started) * 1000)
        time.sleep(0.05)
    attack.join()
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    figures = {
        "slow_connections": count,
        "attack_seconds": seconds,
        "established_on_443_after_3s": established,
        "slow_connections_opened": stats["connections"],
        "slow_connections_cut_by_nginx": stats["cut_by_nginx"],
        "health_requests": len(latencies),
        "health_p50_ms": round(statistics.median(latencies), 1),
        "health_p99_ms": round(p99, 1),
        "health_max_ms": round(latencies[-1], 1),
    }
    testhost.figures["slow_client_test"] = figures
    print(f"\nslow clients: {json.dumps(figures)}")
    assert established >= count * 0.9, "the slow connections did not stay open"
    assert failures == [], failures[:5]
