"""What a variable's text may be: the parsers ``VARIABLES`` uses (each raises ValueError with
the problem), the values some of them allow, and the address checks built on them."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

from ..domain.fields import QUEUE_PATTERN, TIMEOUT_MAX
from ..durations import parse_duration

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"expected a number of at least {minimum}, got {value}")
    return value


def _one_of(text: str, choices: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise ValueError(f"expected a TCP port (1-65535), got {value}")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"expected a duration above zero, got {text!r}")
    return value


def _task_timeout(text: str) -> int:
    """A task's time limit: whole seconds from 1s to 24h (the tasks.timeout column)."""
    value = parse_duration(text)
    if value != int(value) or not 1 <= value <= TIMEOUT_MAX:
        raise ValueError(f"expected whole seconds from 1s to 24h, such as 30s or 15m, got {text!r}")
    return int(value)


def _duration_or_zero(text: str) -> float:
    """A duration, or ``0`` (with a unit or without) meaning never: TASK_RETENTION's keep
    forever. The syntax has no sign, so nothing is below zero."""
    return 0.0 if text.strip() == "0" else parse_duration(text)


DURATION_PARSERS: frozenset[Callable[[str], Any]] = frozenset(
    {_positive_duration, _task_timeout, _duration_or_zero}
)

ISOLATIONS = ("process", "thread")
_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _queues(text: str) -> tuple[str, ...]:
    """``*`` (every queue) or a comma list of queue names (``fields.QUEUE_REGEX``)."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if names == ("*",):
        return names
    if not names:
        raise ValueError("expected * or a comma list of queue names")
    for name in names:
        if not QUEUE_PATTERN.fullmatch(name):
            raise ValueError(
                f"expected * or queue names of a-z, 0-9, _ and - (1 to 64), got {name!r}"
            )
    return names


def _isolation(text: str) -> str:
    return _one_of(text, ISOLATIONS)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _size(text: str) -> int:
    """Bytes: ``0`` (off), ``800MB``, ``2GiB``, ``65536`` (KB, MB, GB are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size such as 0, 512MB or 2GB, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()[:1]]


def _database_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("postgresql", "postgres") or not (parts.path.strip("/")):
        raise ValueError("expected a libpq URL such as postgresql://user:password@host:5432/dbname")
    return text.strip()


def _http_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError(f"expected a valid port in {text!r}") from None
    return text.strip().rstrip("/")


def _log_level(text: str) -> str:
    return _one_of(text, LOG_LEVELS)


def _port_or_zero(text: str) -> int:
    text = text.strip()
    return 0 if text == "0" else _port(text)


LOG_FORMATS = ("json", "text")


def _log_format(text: str) -> str:
    return _one_of(text, LOG_FORMATS)


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``127.0.0.0/8, ::1, 10.0.0.5``: addresses or CIDR networks, comma separated."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"expected IP addresses or CIDR networks, got {item!r}") from None
    return tuple(networks)


def address_allowed(address: str | None, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    """Whether a peer's IP address (``REMOTE_ADDR``) is in one of ``networks``."""
    if not address:
        return False
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:10.0.0.5 on a v6 socket
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


AUTH_MODES = ("token", "off")


def _auth_mode(text: str) -> str:
    return _one_of(text, AUTH_MODES)


def _token(text: str) -> str:
    value = text.strip()
    if any(c.isspace() for c in value):
        raise ValueError("a token has no blanks in it")
    return value


def is_loopback(host: str) -> bool:
    """Is ``host`` (an ``API_HOST``) reachable from this machine only? Loopback addresses,
    ``localhost`` and a unix socket (``unix:/path``) are."""
    host = host.strip()
    if host.startswith("unix:") or host.lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _nonblank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text.strip()
