"""Clients against gunicorn itself, over raw sockets: what the app never sees, such as a
SCRIPT_NAME header (ignored)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from ..support import start_api, stop_api


@pytest.fixture(scope="module")
def api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    proc, url = start_api(database_url, log, API_WORKERS="2")
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


@pytest.mark.parametrize("script_name", ["/nowhere", "/v1", "/health"])
def test_a_script_name_header_is_not_trusted(api: dict, script_name: str) -> None:
    # from loopback, which gunicorn trusts for forwarded headers: it must change nothing
    reply = send(
        api["addr"],
        b"GET /health HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: " + script_name.encode() + b"\r\n\r\n",
    )
    assert reply.status == 200, reply.body
    assert reply.body["data"]["status"] == "ok"
