"""A small RFC 6455 websocket client over a blocking socket, as a browser speaks to daphne.

    ws = WebSocket.connect(server.url, "/ws/events/", cookie="sessionid=...")
    ws.expect_silence(30)           # no message and no close for 30 s (pings are answered)
    event = ws.receive_json(10)     # the next text message, waited for up to 10 s

Text frames only (the events socket sends nothing else); pings are answered with pongs like a
browser does, so daphne's keepalive never closes the socket for lack of a reply.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import struct
import time
from urllib.parse import urlsplit

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Closed(Exception):
    """The server closed the websocket (or the TCP connection)."""


class WebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes = b"", name: str = ""):
        self.sock = sock
        self.name = name or base64.b64encode(os.urandom(3)).decode()  # for failure messages
        self._buffer = buffered

    @classmethod
    def connect(cls, base_url: str, path: str, cookie: str = "", timeout: float = 10, name: str = "") -> "WebSocket":
        parts = urlsplit(base_url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: {base_url}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n")
        sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                raise Closed(f"connection closed during the handshake: {response!r}")
            response += chunk
        head, _, rest = response.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            sock.close()
            raise Closed(f"handshake refused: {head.decode(errors='replace')}")
        return cls(sock, rest, name)

    # Reading ------------------------------------------------------------------------------------

    def _read_exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete websocket frame in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no complete websocket frame in time") from None
            if not chunk:
                raise Closed(f"{self.name}: the server closed the TCP connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _next_frame(self, deadline: float) -> tuple[int, bytes]:
        first, second = self._read_exactly(2, deadline)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exactly(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exactly(8, deadline))[0]
        mask = self._read_exactly(4, deadline) if second & 0x80 else b""
        payload = self._read_exactly(length, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def receive_text(self, timeout: float) -> str:
        """The next text message; answers pings meanwhile. Raises Closed or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self._next_frame(deadline)
            if opcode == TEXT:
                return payload.decode()
            if opcode == PING:
                self._send_frame(PONG, payload)
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(f"{self.name}: the server closed the websocket (code {code})")

    def receive_json(self, timeout: float) -> dict:
        return json.loads(self.receive_text(timeout))

    def _take_what_arrived(self) -> None:
        """Read what the socket holds now and handle every complete frame: answer pings, fail on a
        message or a close."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(f"{self.name}: the server closed the TCP connection")
        self._buffer += chunk
        while _complete_frame_length(self._buffer) is not None:
            opcode, payload = self._next_frame(time.monotonic() + 1)
            if opcode == PING:
                self._send_frame(PONG, payload)
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(f"{self.name}: the server closed the websocket (code {code})")
            elif opcode == TEXT:
                raise AssertionError(f"{self.name}: expected silence, got a message: {payload.decode()}")

    def expect_silence(self, seconds: float) -> None:
        """Stay connected for `seconds`, failing on any message or close (pings are answered)."""
        expect_silence([self], seconds)

    # Writing ------------------------------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # a client masks every frame (RFC 6455 5.3)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        try:
            self._send_frame(CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def expect_silence(sockets: list[WebSocket], seconds: float) -> None:
    """Keep every socket open for `seconds` at once, failing on any message or close."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([ws.sock for ws in sockets], [], [], remaining)
        for ws in sockets:
            if ws.sock in readable:
                ws._take_what_arrived()


def _complete_frame_length(buffer: bytes) -> int | None:
    """The size of the first frame in `buffer`, or None while it is incomplete."""
    if len(buffer) < 2:
        return None
    length, header = buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, header = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, header = struct.unpack("!Q", buffer[2:10])[0], 10
    size = header + (4 if buffer[1] & 0x80 else 0) + length
    return size if len(buffer) >= size else None
