"""Clients against gunicorn itself, over raw sockets: a request that stalls or trickles
(408 within API_READ_TIMEOUT), a body cut short (400), a chunk size no body can have (413),
a TLS ClientHello on the plain port (400 at once), a SCRIPT_NAME header (ignored), and
slow sockets on every worker that must not keep /health from answering. Every refusal is
the JSON envelope with a request ID, and nothing is stored."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from ..support import Tokens, start_api, stop_api

READ_TIMEOUT = 1.0  # short, so the stalled cases take a second each


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    proc, url = start_api(database_url, log, API_WORKERS="2", API_READ_TIMEOUT="1s")
    parts = urlsplit(url)
    yield {"url": url, "addr": (parts.hostname, parts.port), "log": log}
    stop_api(proc)


class Reply:
    def __init__(self, raw: bytes, seconds: float) -> None:
        head, _, body = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status.split()[1]) if status else 0
        self.headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
        self.body = json.loads(body) if body else None
        self.seconds = seconds

    def error(self, status: int, code: str) -> dict:
        assert self.status == status, (self.status, self.body)
        assert self.headers["content-type"] == "application/json"
        assert self.headers["x-request-id"]
        assert self.body["data"] is None and self.body["error"]["code"] == code, self.body
        return self.body["error"]


def send(
    addr: tuple[str, int], *parts: bytes, pause: float = 0.0, half_close: bool = False
) -> Reply:
    """Send ``parts`` (``pause`` seconds apart), then read the answer to its end."""
    began = time.monotonic()
    with socket.create_connection(addr, timeout=15) as sock:
        for n, part in enumerate(parts):
            if n and pause:
                time.sleep(pause)
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed before the rest was sent
                break
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    return Reply(reply, time.monotonic() - began)


def post_head(token: str, *headers: bytes) -> bytes:
    return (
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n" + b"".join(headers) + b"\r\n"
    )


def client_hello() -> bytes:
    """The first flight of a real TLS client (what ``curl https://`` sends first)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="x")
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello
        tls.do_handshake()
    return outgoing.read()


def logged(log: Path, rid: str) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == rid]


def test_a_request_head_that_stops_is_a_408_within_the_read_timeout(api: dict) -> None:
    reply = send(api["addr"], b"GET /health HTTP/1.1\r\nHost: x\r\n")
    error = reply.error(408, "request_timeout")
    assert "API_READ_TIMEOUT" in error["message"]
    assert READ_TIMEOUT <= reply.seconds < READ_TIMEOUT + 3, reply.seconds
    mine = logged(api["log"], reply.headers["x-request-id"])
    assert mine and all(line["level"] == "WARNING" for line in mine), mine


def test_a_client_trickling_its_head_is_cut_off_too(api: dict) -> None:
    # a byte every 0.2 s: each read is quick, the request as a whole is not
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40
    reply = send(api["addr"], *(head[i : i + 1] for i in range(len(head))), pause=0.2)
    reply.error(408, "request_timeout")
    assert reply.seconds < READ_TIMEOUT + 3, reply.seconds


def test_a_body_that_stops_is_a_408_and_nothing_is_stored(
    api: dict, db, api_tokens: Tokens
) -> None:
    body = b'{"title": "cut short"}'
    reply = send(api["addr"], post_head(api_tokens.write, b"Content-Length: 100\r\n") + body)
    error = reply.error(408, "request_timeout")
    assert "did not arrive within 1s" in error["message"]
    assert reply.seconds < READ_TIMEOUT + 3, reply.seconds
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_body_shorter_than_its_content_length_is_a_400(api: dict, db, api_tokens: Tokens) -> None:
    # the client says 100 bytes, sends 22 and closes its side: a body cut short, not a task
    body = b'{"title": "cut short"}'
    head = post_head(api_tokens.write, b"Content-Length: 100\r\n")
    reply = send(api["addr"], head + body, half_close=True)
    error = reply.error(400, "bad_request")
    assert error["message"] == "the body ended after 22 of the 100 bytes of its Content-Length"
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_chunk_larger_than_any_body_is_a_413_at_its_size_line(
    api: dict, db, api_tokens: Tokens
) -> None:
    head = post_head(api_tokens.write, b"Transfer-Encoding: chunked\r\n")
    reply = send(api["addr"], head + b"f" * 20 + b"\r\n" + b'{"title": "x"')
    error = reply.error(413, "payload_too_large")
    assert str(int("f" * 20, 16)) in error["message"] and "API_MAX_BODY" in error["message"]
    assert reply.seconds < READ_TIMEOUT, reply.seconds  # not a wait for the chunk
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_tls_client_hello_on_the_plain_port_is_a_400_at_once(api: dict) -> None:
    # What gunicorn has of a ClientHello that came in more than one segment (or has no
    # supported_groups extension): no LF byte, so gunicorn waited for the request line's end.
    hello = client_hello()
    reply = send(api["addr"], hello[: hello.index(b"\n")])
    error = reply.error(400, "bad_request")
    assert "TLS" in error["message"]
    assert reply.seconds < READ_TIMEOUT, reply.seconds


def test_a_request_of_some_other_protocol_is_a_400_at_once(api: dict) -> None:
    reply = send(api["addr"], b"\x00\x01binary")
    error = reply.error(400, "bad_request")
    assert "0x00" in error["message"]
    assert reply.seconds < READ_TIMEOUT, reply.seconds


@pytest.mark.parametrize("script_name", ["/nowhere", "/v1", "/health"])
def test_a_script_name_header_is_not_trusted(api: dict, script_name: str) -> None:
    # from loopback, which gunicorn trusts for forwarded headers: it must change nothing
    reply = send(
        api["addr"],
        b"GET /health HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: " + script_name.encode() + b"\r\n\r\n",
    )
    assert reply.status == 200, reply.body
    assert reply.body["data"]["status"] == "ok"


def test_slow_sockets_on_every_worker_hold_health_for_the_read_timeout_at_most(
    api: dict,
) -> None:
    # one slow client per gunicorn worker, trickling a byte every 0.3 s and never done
    slow = [socket.create_connection(api["addr"]) for _ in range(2)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        for _ in range(3):
            time.sleep(0.3)
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")
        response = requests.get(api["url"] + "/health", timeout=READ_TIMEOUT + 5)
        assert response.status_code == 200
        assert time.monotonic() - began < READ_TIMEOUT + 3
    finally:
        for sock in slow:
            sock.close()
