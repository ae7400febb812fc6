"""The one way out: every connection mailgate opens to a service - HTTP APIs, webhooks, media
downloads (outgoing/http.py) and SMTP servers (transports/smtp.py) - is opened by connect() here.

Service URLs and hosts are typed in by service owners, and media URLs arrive in webhook calls, so
none of them may turn mailgate against this machine or its network (a cloud metadata address, a
local admin API, a database port). connect() resolves the name once, refuses it when any address
is loopback, private, link-local, multicast, unspecified or reserved, and connects to the very
address it checked: a name that resolves to a public address for a check and to 127.0.0.1 a
moment later (DNS rebinding) gets no second lookup to exploit. TLS still verifies the certificate
against the name (SNI), and HTTP still sends the name as Host.

MAILGATE_ALLOW_PRIVATE_TARGETS turns the refusal off: for the test suite, whose servers listen on
loopback, and for an install whose service owners are all trusted with its private network.
"""

from __future__ import annotations

import socket

from django.conf import settings

from mailgate.net import non_public_kind
from outgoing.errors import TransportError

SETTING = "MAILGATE_ALLOW_PRIVATE_TARGETS"


class TargetRefused(TransportError):
    """The destination is not a public address: nothing was sent, and retrying will not help."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def private_allowed() -> bool:
    return bool(getattr(settings, SETTING, False))


def resolve(host: str, port: int | None) -> list[tuple[int, tuple]]:
    """The (family, socket address) pairs `host` resolves to for TCP, every one of them allowed;
    raises TargetRefused naming the host and the kind of address, or socket.gaierror (an OSError,
    so callers report it as the network error it is)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    if not private_allowed():
        for _, sockaddr in found:
            kind = non_public_kind(sockaddr[0])
            if kind:
                raise TargetRefused(refusal(host, sockaddr[0], kind))
    return found


def refusal(host: str, address: str, kind: str) -> str:
    # The address itself only when the owner typed it: a name's private address is not theirs to learn.
    where = f"{host} is a {kind} address" if host.strip("[]") == address else f"{host} resolves to a {kind} address"
    return f"refused: {where}; mailgate only connects to public addresses ({SETTING} is off)"


def host_problem(host: str) -> str:
    """Why `host` would be refused, or "" - for validating a service as it is saved. A name that
    does not resolve now is not an error here (it may later); connect() checks again anyway."""
    try:
        resolve(host, None)
    except TargetRefused as exc:
        return exc.message
    except (OSError, UnicodeError):
        pass
    return ""


def connect(host: str, port: int, timeout, source_address=None) -> socket.socket:
    """A TCP connection to `host`, made to an address resolve() allowed. Raises TargetRefused or
    the OSError of the last address tried."""
    error: OSError | None = None
    for family, sockaddr in resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if isinstance(timeout, (int, float)):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address for {host}")
