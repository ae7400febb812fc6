"""Keep-alive for outgoing connections: an HTTP connection whose answer was read in full
(outgoing/http.py), or an SMTP session whose message was accepted (transports/smtp.py), is kept
open, per process, for the next request to the same server.

A send batch posts its webhooks one after another to one server, and a live message follows the
last one by seconds: a new connection for each cost a TCP handshake (and for https a TLS one, a
round trip or two and a few ms of CPU) on both ends. Kept, a PostgreSQL backlog's 2,000 webhooks
took ~1 CPU second less, half of it in the receiver (bench/pipeline.py --backlog: workers
8.4-9.3 → 8.5-8.8 s, the bench's sink 1.1-1.2 → 0.6 s), and reached it 0.3-0.8 s sooner.

A connection is kept at most IDLE_SECONDS: under the 5 s after which common servers (Node,
Apache) close an idle one, so a kept connection is rarely closed under us; one that was anyway
(the server's FIN is waiting to be read) is found before it is used (`_closed`). Should the
server close it just as we send, `exchange` sends once more on a new connection: the request it
lost is what the pipeline's retry would have sent again anyway, with the same Idempotency-Key.

Kept connections are keyed by everything they were opened under: scheme, host, port, the TLS
context, whether egress allowed private addresses then (and for SMTP the login), so no setting
change is bypassed.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from time import monotonic

IDLE_SECONDS = 4.0
MOST_KEPT = 8  # per process; the one idle longest goes first

_lock = threading.Lock()
_kept: dict[tuple, list[tuple[object, float]]] = {}  # key → [(connection, idle since)]
_pid = os.getpid()


def exchange(key: tuple, open_new, use, closed_under_us):
    """What `use(conn)` returns, on a connection kept for `key` or else on `open_new()`: `use` does
    one exchange and returns (its result, whether the connection is fit for another). A kept one
    that fails with an error `closed_under_us(exc)` calls the server's own closing (its idle
    timeout came first) is closed and the exchange made once more on a new one: what it lost is
    what the pipeline's retry would send again. Either way a connection is kept when fit and
    closed otherwise, also when `use` raises."""
    conn = take(key)
    if conn is not None:
        try:
            return _once(key, conn, use)
        except Exception as exc:
            if not closed_under_us(exc):
                raise
    return _once(key, open_new(), use)


def _once(key: tuple, conn, use):
    try:
        result, fit = use(conn)
    except BaseException:
        conn.close()
        raise
    if fit:
        keep(key, conn)
    else:
        conn.close()
    return result


def take(key: tuple):
    """A kept connection for `key`, open and idle for less than IDLE_SECONDS, or None."""
    with _lock:
        _forget_after_fork()
        stack = _kept.get(key)
        found = stack.pop() if stack else None
        if stack == []:
            del _kept[key]
    if found is None:
        return None
    conn, since = found
    if monotonic() - since > IDLE_SECONDS or _closed(conn):
        conn.close()
        return None
    return conn


def keep(key: tuple, conn) -> None:
    """Keep `conn` (its last answer read in full) for the next request to `key`."""
    now = monotonic()
    stale = []
    with _lock:
        _forget_after_fork()
        _kept.setdefault(key, []).append((conn, now))
        oldest_first = sorted(((since, k, c) for k, stack in _kept.items() for c, since in stack),
                              key=lambda entry: entry[0])
        excess = len(oldest_first) - MOST_KEPT
        for position, (since, k, c) in enumerate(oldest_first):
            if position < excess or now - since > IDLE_SECONDS:
                _kept[k].remove((c, since))
                if not _kept[k]:
                    del _kept[k]
                stale.append(c)
    for c in stale:
        c.close()


def close_all() -> None:
    """Close every kept connection (tests; a process that is about to stop)."""
    with _lock:
        conns = [c for stack in _kept.values() for c, _ in stack]
        _kept.clear()
    for c in conns:
        c.close()


def quick_ack(sock) -> None:
    """Acknowledge the answer's first segment at once. A server that writes its headers and its body
    in two sends with Nagle's algorithm on (Python's http.server does) holds the body until that
    segment is acknowledged; on a kept connection Linux delays the ACK by up to 40 ms, so every
    request on it would take 40 ms longer than on a new one."""
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


def _closed(conn) -> bool:
    """An idle HTTP connection has nothing to read: if its socket is readable, the server closed it
    (or sent what no request asked for); either way it is not fit for another request."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _forget_after_fork() -> None:
    """A forked child (django-q's workers) must not share its parent's sockets: drop, unclosed,
    whatever the parent kept. Called with _lock held."""
    global _pid
    if os.getpid() != _pid:
        _kept.clear()
        _pid = os.getpid()
