"""Reading a request under bounds (``flowforge api``'s gunicorn worker).

Slow clients: gunicorn's sync worker reads a request with blocking calls and no timeout of
its own, so a client that stops mid-request holds the worker until ``API_TIMEOUT`` kills it
(a 500). ``ReadingWorker`` gives each connection ``API_READ_TIMEOUT`` from its accept to
deliver the whole request (408 after that) and answers a first byte no HTTP request starts
with (a TLS ClientHello on this plain port) with a 400 at once. A chunk larger than
``API_MAX_BODY`` is refused at its size line (413), and requests gunicorn cannot parse are
answered in the JSON envelope (``write_json_error``). ``install`` puts these in place in
the arbiter, before it forks the workers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import ParseException
from gunicorn.workers.sync import SyncWorker

from ..durations import format_duration
from .envelope import ERROR_CODES, REQUEST_ID_HEADER, error_body, request_id_from

log = logging.getLogger("flowforge.api")


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (bad request line, oversized headers,
    broken chunking), in FlowForge's JSON envelope with a request ID instead of gunicorn's
    HTML page: such requests never reach the app, so this is the only place to fix them."""
    rid = request_id_from(None)
    code = ERROR_CODES.get(status_int, "internal_error" if status_int >= 500 else "bad_request")
    body = error_body(code, mesg or reason)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {rid}\r\n\r\n"
    )
    log.warning("malformed request: %s %s", status_int, mesg, extra={"request_id": rid})
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class ClientFault(ParseException):
    """A request FlowForge refuses while gunicorn reads it: ``status`` and ``reason`` are the
    answer's. A ``ParseException``, so the app's body reader (``inputs.read_json``) takes it
    as the body's failure; it answers with ``status``, found by attribute (the worker's
    classes are the arbiter's copy of this module, the app's a fresh import)."""

    status = 400
    reason = "Bad Request"


class RequestTimeout(ClientFault):
    status = 408
    reason = "Request Timeout"


class ChunkTooLarge(ClientFault):
    status = 413
    reason = "Payload Too Large"


# A request starts with its method, a token (RFC 9110 5.6.2), or with the CR of the one
# empty line RFC 9112 2.2 allows before it. gunicorn waits for the line's CRLF before it
# looks: a TLS ClientHello (first byte 0x16) has none, so it waited for API_TIMEOUT.
_REQUEST_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r"
)
_TLS_HANDSHAKE = 0x16
_LAST_LOOK = 0.001  # seconds a read past the deadline waits for bytes already sent


class DeadlineSocket(socket.socket):
    """An accepted connection whose request must have arrived by a deadline: each read
    waits at most until then, and raises ``RequestTimeout`` after it. A whole-request bound,
    not one per read, so a client trickling a byte a second is cut off too.

    Only reads have the deadline, and only until gunicorn starts closing (``shutdown``):
    its own drain after the answer has a timeout of its own. Sends block as before."""

    __slots__ = ("_deadline", "_limit", "_started")

    @classmethod
    def adopt(cls, sock: socket.socket, read_timeout: float) -> DeadlineSocket:
        """``sock``'s connection (its descriptor) as a ``DeadlineSocket``; ``sock`` is left
        detached."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new._deadline = time.monotonic() + read_timeout
        new._limit = read_timeout
        new._started = False
        return new

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._deadline is None:
            return super().recv(bufsize, flags)
        # Past the deadline a read still takes what has already arrived: the time the app
        # spent before it read the body (a slow token check), or the connection waited in
        # the backlog, is not the client's.
        self.settimeout(max(self._deadline - time.monotonic(), _LAST_LOOK))
        try:
            data = super().recv(bufsize, flags)
        except TimeoutError:
            raise self._timeout() from None
        finally:
            self.settimeout(None)  # blocking again, as gunicorn made it
        if not self._started and data:
            self._started = True
            if data[0] not in _REQUEST_START:
                raise ClientFault(
                    "a TLS handshake on a plain HTTP port (use https:// through the proxy, or "
                    "http:// here)"
                    if data[0] == _TLS_HANDSHAKE
                    else f"not an HTTP request (it starts with byte 0x{data[0]:02x})"
                )
        return data

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request did not arrive within {format_duration(self._limit)} (API_READ_TIMEOUT)"
        )

    def shutdown(self, how: int) -> None:
        self._deadline = None
        super().shutdown(how)


class ReadingWorker(SyncWorker):
    """gunicorn's sync worker (measured fastest here) with the request read under
    ``API_READ_TIMEOUT`` (``DeadlineSocket``) and FlowForge's refusals (``ClientFault``)
    answered in the envelope. ``read_timeout`` and ``max_body`` are set on the class by
    ``ApiServer.load_config`` in the arbiter, before it forks the workers."""

    read_timeout = 5.0
    max_body = 1024 * 1024

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        super().handle(listener, DeadlineSocket.adopt(client, self.read_timeout), addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, ClientFault):  # gunicorn would answer an exception of ours 500
            with contextlib.suppress(OSError):
                write_json_error(client, exc.status, exc.reason, str(exc))
            return
        super().handle_error(req, client, addr, exc)


_parse_chunk_size = ChunkedReader.parse_chunk_size


def _bounded_parse_chunk_size(self: ChunkedReader, *args: Any, **kwargs: Any) -> Any:
    """gunicorn's chunk-size parser, refusing a chunk larger than the largest body at its
    size line: gunicorn would otherwise wait for all of a 2**80-byte chunk."""
    size, rest = _parse_chunk_size(self, *args, **kwargs)
    if size > ReadingWorker.max_body:
        raise ChunkTooLarge(
            f"a chunk of {size} bytes is larger than the largest body, "
            f"{ReadingWorker.max_body} bytes (API_MAX_BODY)"
        )
    return size, rest


def install(read_timeout: float, max_body: int) -> None:
    """In the arbiter, before it forks the workers: gunicorn's error page and chunk-size
    parser replaced, and ``ReadingWorker``'s bounds set from the settings."""
    # gunicorn's workers call util.write_error for requests they cannot parse.
    gunicorn_util.write_error = write_json_error
    ReadingWorker.read_timeout = read_timeout
    ReadingWorker.max_body = max_body
    ChunkedReader.parse_chunk_size = _bounded_parse_chunk_size
