"""One IDLE connection over aioimaplib: connect, log in, SELECT, IDLE, DONE, LOGOUT.

aioimaplib does the IMAP framing; this subclass fixes what an always-on IDLE connection needs:

* Memory. asyncio's SSLProtocol reads into a 256 KiB buffer that it allocates per connection
  (Python 3.11), which alone is 300 KB resident per TLS connection once OpenSSL is counted.
  `_SlimSSLProtocol` reads 2 KiB at a time instead: an IDLE connection only ever receives short
  lines (big FETCHes run in the sync worker over imap-tools). Measured: 40 KB per idling TLS
  connection with 2 KiB, 47 KB with 8 KiB, 300 KB with asyncio's default.
* STARTTLS, which aioimaplib does not implement.
* A dropped connection never wakes a pending aioimaplib command, and `idle_start` waits forever
  when the server answers IDLE with BYE. Every step here races the command against the connection
  loss and a timeout (`call`), so nothing waits longer than `timeout`.
* Untagged lines that arrive in the same packet as the tagged end of IDLE stay in aioimaplib's
  IDLE buffer; `stop_idle` hands them back instead of dropping them.
* AUTHENTICATE PLAIN (SASL-IR) when offered, so non-ASCII passwords work; LOGIN otherwise.
* AUTHENTICATE XOAUTH2 / OAUTHBEARER for OAuth2 accounts. aioimaplib cannot answer a server's
  challenge, and a refused token always gets one (the JSON error): `_Protocol` answers it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import sys
from asyncio import sslproto

import aioimaplib
from aioimaplib.aioimaplib import AUTH, Command, IMAP4ClientProtocol, quoted

from imap import errors, utf7
from imap.connection import throttle_from_text
from imap.oauth import sasl

# asyncio's default is 256 KiB; see the module docstring.
SSL_READ_SIZE = 2 * 1024
# Dead peers (NAT timeouts, pulled cables) are noticed within ~2 minutes instead of at the
# next IDLE renewal, 25 minutes later.
KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 15, "TCP_KEEPCNT": 4}


class _HideCredentials(logging.Filter):
    """A second guard on aioimaplib's logger (MAILGATE_LOG_LEVEL=DEBUG logs every command sent):
    whatever record names a LOGIN or AUTHENTICATE command (the "Sending" line, or a pending
    command shown in a continuation or error line) keeps the command name, never its arguments."""

    COMMAND = re.compile(r"(\b[A-Z]+\d+ (?:LOGIN|AUTHENTICATE)) .*", re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = self.COMMAND.sub(r"\1 [credentials hidden]", text)
        if hidden != text:
            record.msg, record.args = hidden, ()
        return True


logging.getLogger(aioimaplib.aioimaplib.__name__).addFilter(_HideCredentials())


class ConnectionLost(errors.ProtocolError):
    reason = "connection lost"


# Put on the IDLE queue when the transport closes, so a wait for pushes ends at once.
LOST = [b"* BYE connection lost"]
# Every connection to a server reports the same capabilities: share one frozenset per distinct
# list instead of a set of ~20 strings per connection (3 KB each at 1,000 connections).
_CAPABILITIES: dict[frozenset, frozenset] = {}


def _shared(capabilities) -> frozenset:
    key = frozenset(sys.intern(c) for c in capabilities)
    return _CAPABILITIES.setdefault(key, key)


class _Protocol(IMAP4ClientProtocol):
    """aioimaplib's protocol, answering the challenges of a SASL exchange in progress."""

    sasl_replies: list[bytes] = []  # what to send to the next continuations of AUTHENTICATE
    sasl_abort = b""  # sent to any further continuation: ends the exchange (server says NO)
    sasl_challenges: list[bytes] = []

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is None or command.name != "AUTHENTICATE":
            return super()._continuation(line)
        challenge = line[1:].strip()
        if challenge:
            self.sasl_challenges = [*self.sasl_challenges, base64.b64decode(challenge + b"==")]
        reply = self.sasl_replies[0] if self.sasl_replies else self.sasl_abort
        self.sasl_replies = self.sasl_replies[1:]
        self.transport.write(base64.b64encode(reply) + b"\r\n")


class _SlimSSLProtocol(sslproto.SSLProtocol):
    max_size = SSL_READ_SIZE


def _keepalive(transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:  # not a TCP socket (tests over unix sockets): keepalive is an optimisation
        pass


def push_kinds(lines) -> tuple[bool, bool, bool]:
    """(new mail, flags or expunge, bye) from untagged lines as aioimaplib hands them ("5 EXISTS")."""
    new = changed = bye = False
    for line in lines:
        if not isinstance(line, (bytes, bytearray)):
            continue
        parts = bytes(line).lstrip(b"* ").split(b" ", 2)
        if parts[0].upper() == b"BYE":
            bye = True
        elif len(parts) >= 2 and parts[0].isdigit():
            kind = parts[1].upper()
            if kind == b"EXISTS":
                new = True
            elif kind in (b"EXPUNGE", b"FETCH"):
                changed = True
        elif parts[0].upper() == b"VANISHED":
            changed = True
    return new, changed, bye


class IdleClient(aioimaplib.IMAP4):
    """An aioimaplib client for one IDLE connection. Use `open()`; every method has a timeout."""

    def __init__(self, host: str, port: int, *, tls: str, ssl_context: ssl.SSLContext | None, timeout: float):
        self.tls = tls  # "ssl", "starttls" or "none"
        self.lost = None  # future, set when the transport closes
        self.idle_cmd = None
        self.idle_task = None
        super().__init__(host, port, timeout=timeout, conn_lost_cb=self._on_lost, ssl_context=ssl_context)

    # Connection ---------------------------------------------------------------------------------
    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None):
        loop = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(loop, conn_lost_cb)
        self.lost = loop.create_future()
        self._ssl_context = ssl_context
        self._client_task = loop.create_task(self._connect(loop, host, port))

    async def _connect(self, loop, host, port):
        if self.tls == "ssl":
            waiter = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _SlimSSLProtocol(loop, self.protocol, self._ssl_context, waiter, server_hostname=host,
                                         ssl_handshake_timeout=self.timeout, ssl_shutdown_timeout=5.0),
                host, port)
            await waiter  # the TLS handshake (certificate verification errors surface here)
        else:
            transport, _ = await loop.create_connection(lambda: self.protocol, host, port)
        _keepalive(transport)

    def _on_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
            self.protocol.idle_queue.put_nowait(LOST)

    async def call(self, awaitable, timeout: float | None = None):
        """Await an aioimaplib step; raise ConnectionLost or TimeoutError instead of hanging."""
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task, self.lost}, timeout=timeout or self.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task in done:
            return task.result()
        task.cancel()
        if self.lost.done():
            raise ConnectionLost(f"connection to {self.host}:{self.port} was closed by the server")
        raise TimeoutError()

    async def open(self, username: str, password: str, folder: str, *, oauth_token=None) -> None:
        """Greeting, STARTTLS if asked, authentication and SELECT of `folder`.

        With `oauth_token` (see _authenticate_oauth) the login is XOAUTH2 or OAUTHBEARER."""
        await self.call(self._client_task)
        self._client_task = None  # done; a finished task still holds its coroutine's result
        await self.call(self.protocol.wait("AUTH|NONAUTH"))
        if self.tls == "starttls":
            await self._starttls()
        if oauth_token is not None:
            await self._authenticate_oauth(username, oauth_token)
        else:
            await self._authenticate(username, password)
        if "IDLE" not in self.protocol.capabilities:
            raise errors.ProtocolError(f"{self.host}:{self.port} does not support IDLE")
        response = await self.call(self.protocol.select(quoted(utf7.encode(folder))))
        if response.result != "OK":
            raise errors.ProtocolError(f"cannot select {folder!r}: {_text(response)}")

    async def _starttls(self) -> None:
        proto = self.protocol
        if "STARTTLS" not in proto.capabilities:
            raise errors.TlsFailure(f"{self.host}:{self.port} does not offer STARTTLS")
        response = await self.call(proto.execute(Command("STARTTLS", proto.new_tag(), loop=proto.loop)))
        if response.result != "OK":
            raise errors.TlsFailure(f"STARTTLS refused by {self.host}:{self.port}: {_text(response)}")
        # loop.start_tls() with our smaller read buffer.
        loop, transport = proto.loop, proto.transport
        waiter = loop.create_future()
        ssl_protocol = _SlimSSLProtocol(loop, proto, self._ssl_context, waiter, server_hostname=self.host,
                                        call_connection_made=False, ssl_handshake_timeout=self.timeout,
                                        ssl_shutdown_timeout=5.0)
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        loop.call_soon(ssl_protocol.connection_made, transport)
        loop.call_soon(transport.resume_reading)
        await self.call(waiter)
        proto.transport = ssl_protocol._app_transport
        # RFC 3501 6.2.1: capabilities from before the handshake must not be trusted.
        await self.call(proto.capability())

    async def _authenticate(self, username: str, password: str) -> None:
        proto = self.protocol
        caps = proto.capabilities
        if "AUTH=PLAIN" in caps and "SASL-IR" in caps:
            secret = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
            command = Command("AUTHENTICATE", proto.new_tag(), "PLAIN", secret, loop=proto.loop)
        else:
            # Not aioimaplib's login(): it scrubs the raw password from its DEBUG log of the
            # command, but the wire carries the quoted form (\" and \\ escaped), which it missed.
            secret = quoted(password)
            command = Command("LOGIN", proto.new_tag(), quoted(username), secret, loop=proto.loop)
        response = await self.call(proto.execute(command, scrub=secret))
        if response.result == "OK":
            async with proto.state_condition:
                proto.state = AUTH
                proto.state_condition.notify_all()
        else:
            text = _text(response)
            raise throttle_from_text(text) or errors.AuthenticationFailed(
                f"authentication failed for {username} at {self.host}:{self.port}")
        await self._after_login(response)

    async def authenticate_once(self, username: str, token: str) -> None:
        """One AUTHENTICATE XOAUTH2/OAUTHBEARER; raises errors.AuthenticationFailed (the caller
        may refresh the token and call again) or another errors.ImapError."""
        proto = self.protocol
        mech = sasl.mechanism(proto.capabilities)
        where = f"{self.host}:{self.port}"
        if mech is None:
            raise sasl.refusal(None, b"", "", username, where)
        initial = sasl.initial_response(mech, username, token, self.host, self.port)
        proto.sasl_abort, proto.sasl_challenges = sasl.abort_response(mech), []
        if "SASL-IR" in proto.capabilities:
            proto.sasl_replies = []
            args = ("AUTHENTICATE", proto.new_tag(), mech, sasl.encode(initial))
        else:  # the first continuation ("+ ") asks for it
            proto.sasl_replies = [initial]
            args = ("AUTHENTICATE", proto.new_tag(), mech)
        response = await self.call(proto.execute(Command(*args, loop=proto.loop), scrub=sasl.encode(initial)))
        if response.result != "OK":
            text = _text(response)
            challenge = proto.sasl_challenges[-1] if proto.sasl_challenges else b""
            raise throttle_from_text(text) or sasl.refusal(mech, challenge, text, username, where)
        async with proto.state_condition:
            proto.state = AUTH
            proto.state_condition.notify_all()
        await self._after_login(response)

    async def _authenticate_oauth(self, username: str, get_token) -> None:
        """`get_token(stale_version)` gives an imap.oauth.tokens.AccessToken; after a refusal it is
        asked once more, with the refused version, for a refreshed one."""
        first = await get_token(None)
        try:
            await self.authenticate_once(username, first.value)
        except errors.AuthenticationFailed:
            await self.authenticate_once(username, (await get_token(first.version)).value)

    async def _after_login(self, response) -> None:
        proto = self.protocol
        for line in response.lines:
            if isinstance(line, bytes) and line.startswith(b"[CAPABILITY "):
                proto.capabilities = set(line[12:].split(b"]", 1)[0].decode().split())
                break
        else:
            await self.call(proto.capability())
        proto.capabilities = _shared(proto.capabilities)

    # IDLE -----------------------------------------------------------------------------------------
    async def start_idle(self) -> None:
        """Send IDLE and wait for the server's continuation ("+ idling")."""
        proto = self.protocol
        self.idle_task = asyncio.ensure_future(proto.idle())
        ack = asyncio.ensure_future(proto.wait_for_idle_response())
        try:
            await self.call(asyncio.wait({self.idle_task, ack}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            ack.cancel()
        if self.idle_task.done():  # tagged answer instead of "+": NO/BAD, or BYE then close
            response = self.idle_task.result()
            raise errors.ProtocolError(f"{self.host}:{self.port} refused IDLE: {_text(response)}")
        self.idle_cmd = proto.pending_sync_command

    async def wait_push(self, timeout: float) -> list:
        """Untagged lines the server pushed during IDLE; [] after `timeout` seconds of silence."""
        # asyncio.timeout rather than call(): no task per wait, which matters at 1,000 connections.
        queue = self.protocol.idle_queue
        try:
            if queue.empty():
                async with asyncio.timeout(timeout):
                    lines = await queue.get()
            else:
                lines = queue.get_nowait()
        except TimeoutError:
            return []
        if lines is LOST:
            raise ConnectionLost(f"connection to {self.host}:{self.port} was closed by the server")
        return lines

    async def stop_idle(self) -> list:
        """DONE; returns untagged lines that came with the end of IDLE (they must not be lost)."""
        self.protocol.idle_done()
        response = await self.call(self.idle_task)
        if response.result != "OK":
            raise errors.ProtocolError(f"{self.host}:{self.port} answered DONE with {_text(response)}")
        lines = []
        queue = self.protocol.idle_queue
        while not queue.empty():
            item = queue.get_nowait()
            if item is not LOST:
                lines.extend(item)
        if self.idle_cmd is not None:
            lines.extend(self.idle_cmd.buffer)
            self.idle_cmd.buffer.clear()
        self.idle_cmd = self.idle_task = None
        return lines

    async def noop(self) -> list:
        response = await self.call(self.protocol.simple_command("NOOP"))
        if response.result != "OK":
            raise errors.ProtocolError(f"{self.host}:{self.port} answered NOOP with {_text(response)}")
        return response.lines

    # Closing ----------------------------------------------------------------------------------------
    @property
    def idling(self) -> bool:
        return self.idle_task is not None and not self.idle_task.done()

    async def close(self, timeout: float) -> None:
        """Polite end: DONE if idling, LOGOUT, close. Never raises; gives up after `timeout` each."""
        transport = self.protocol.transport
        try:
            if transport is not None and not self.lost.done():
                if self.idling:
                    await self.call(self.stop_idle(), timeout)
                if self.protocol.state != "LOGOUT":
                    await self.call(self.protocol.logout(), timeout)
        except Exception:  # noqa: BLE001 - best effort: the connection is dropped either way
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (no goodbye)."""
        for task in (self.idle_task, getattr(self, "_client_task", None)):
            if task is not None and not task.done():
                task.cancel()
        transport = self.protocol.transport
        if transport is not None:
            transport.abort()


def _text(response) -> str:
    lines = [line.decode(errors="replace") if isinstance(line, (bytes, bytearray)) else str(line)
             for line in (response.lines or [])]
    return f"{response.result} {' '.join(lines)}".strip()[:300]
