"""Request bodies are bounded by daphne itself (mailgate/request_limits.py): a huge body to any URL,
anonymous, is answered 413 and cut off near MAILGATE_MAX_REQUEST_BYTES, never buffered whole.
Against the daphne the harness starts, over raw sockets, since the point is what the server reads."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings

from inbound.models import InboundChannel

pytestmark = pytest.mark.django_db(transaction=True)

HUGE = 200 * 1024 * 1024
CHUNK = 64 * 1024


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_status(sock: socket.socket) -> int | None:
    """The response's status code, or None when the server closed without a readable answer."""
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
    except (ConnectionResetError, TimeoutError):
        pass
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def head(path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *lines]) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/hooks/generic/no-such-token/", "/accounts/login/", "/healthz", "/admin/"])
def test_a_declared_huge_body_is_refused_before_a_byte_of_it_is_sent(live_web, path):
    with connect(live_web) as sock:
        sock.sendall(head(path, f"Content-Length: {HUGE}", "Content-Type: application/json"))
        assert read_status(sock) == 413
        assert sock.recv(4096) == b""  # and the connection is closed


def test_a_chunked_stream_of_200_mb_is_cut_off_near_the_limit(live_web):
    limit = max(settings.MAILGATE_MAX_REQUEST_BYTES, settings.MAILGATE_WEBHOOK_MAX_BYTES)
    chunk = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
    sent = 0
    with connect(live_web) as sock:
        sock.sendall(head("/hooks/generic/no-such-token/", "Transfer-Encoding: chunked",
                          "Content-Type: application/json"))
        try:
            while sent < HUGE:
                sock.sendall(chunk)
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = read_status(sock)
    # What went out before the server hung up: the limit plus what the two sockets' buffers hold
    # (a few MB on loopback), nowhere near the 200 MB an unbounded server takes in.
    assert sent < limit + 32 * 1024 * 1024, f"server took {sent} bytes"
    assert status in (413, None)  # the 413 is sent; a reset may beat it to the reader
    assert "refused a request body" in live_web.log()


def test_just_over_the_limit_gets_the_413_answer(live_web):
    limit = max(settings.MAILGATE_MAX_REQUEST_BYTES, settings.MAILGATE_WEBHOOK_MAX_BYTES)
    with connect(live_web) as sock:
        sock.sendall(head("/accounts/login/", "Transfer-Encoding: chunked",
                          "Content-Type: application/x-www-form-urlencoded"))
        sock.sendall(b"%x\r\n%s\r\n" % (limit + 1, b"x" * (limit + 1)))
        assert read_status(sock) == 413


def test_a_webhook_over_its_own_limit_still_gets_the_webhooks_413(live_web, alice):
    channel = InboundChannel(owner=alice, kind="generic", name="limit", token="tok-limit")
    channel.set_secrets({"current": "s3cret"})
    channel.save()
    over = settings.MAILGATE_WEBHOOK_MAX_BYTES + 1
    assert over <= settings.MAILGATE_MAX_REQUEST_BYTES  # so the view, not daphne, answers
    with connect(live_web) as sock:
        sock.sendall(head(f"/hooks/generic/{channel.token}/", f"Content-Length: {over}",
                          "Content-Type: application/json") + b"x" * over)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" not in data  # the view's answer, not daphne's refusal


def test_an_ordinary_post_still_goes_through(live_web):
    body = b"username=x&password=y"
    with connect(live_web) as sock:
        sock.sendall(head("/accounts/login/", f"Content-Length: {len(body)}",
                          "Content-Type: application/x-www-form-urlencoded") + body)
        assert read_status(sock) == 403  # Django's CSRF check answered: the body reached it
