"""A scriptable local HTTP server for webhook / API targets.

    with HttpSink.start() as http:
        http.respond("/hook", [Response(429, headers={"Retry-After": "1"}),
                               Response(200, json={"ok": True})])
        ... code under test POSTs to http.url("/hook") ...
        [first, second] = http.wait_for(2)

Responses for a path: one Response (served every time) or a list consumed in
order, whose last entry then keeps being served. Paths without a script get
`default` (200, empty JSON object).
"""

from __future__ import annotations

import json as jsonlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .ports import HOST


@dataclass
class Response:
    status: int = 200
    json: object = None  # serialised as the body (Content-Type: application/json)
    body: bytes = b""  # used when json is None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeout tests)
    # Close the connection after answering, without saying so (a server's idle timeout ending a
    # kept-alive connection): the client finds out at its next request.
    close_after: bool = False

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.json is not None:
            body = jsonlib.dumps(self.json).encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            body = self.body
        headers["Content-Length"] = str(len(body))
        return body, headers


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # as sent (original case); see header()
    body: bytes
    status: int = 0  # what the sink answered (set before it answers)
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)
    peer: tuple = ()  # the client's (address, port): one per connection

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return default

    def json(self):
        return jsonlib.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real API servers
    server: "_Server"

    def _handle(self) -> None:
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=dict(self.headers.items()),
            body=body,
            peer=self.client_address,
        )
        response = sink._next_response(request)
        request.status = response.status
        # Record before answering, so a client that got its reply can rely
        # on the request being visible in sink.requests.
        sink._record(request)
        if response.delay:
            time.sleep(response.delay)
        payload, headers = response.encode()
        self.send_response(response.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        if response.close_after:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass  # keep test output clean; requests are in sink.requests


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: "HttpSink"


class HttpSink:
    host = HOST

    def __init__(self) -> None:
        # Port 0: the kernel picks a free port at bind time, so no race.
        self._server = _Server((self.host, 0), _Handler)
        self._server.sink = self
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self.requests: list[Request] = []
        self.cafile: str | None = None  # with start(tls=True): the CA file that trusts the sink
        self.default = Response(200, json={})
        self._scripts: dict[tuple[str | None, str], list[Response]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, tls: bool = False) -> "HttpSink":
        """tls: serve HTTPS with a self-signed certificate for 127.0.0.1 (`cafile` trusts it)."""
        self = cls()
        if tls:
            import ssl
            import tempfile

            from tests.servers.ports import make_self_signed_cert

            self._tls_dir = tempfile.mkdtemp(prefix="mailgate-https-")
            cert = make_self_signed_cert(self._tls_dir, "https")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert.cert_path, cert.key_path)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.cafile, self.base_url = cert.cafile, f"https://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"HttpSink:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    # ------------------------------------------------------------ scripting

    def respond(self, path: str, response: "Response | list[Response] | int", method: str | None = None) -> None:
        """Script the answer(s) for ``path`` (optionally one method only).
        A list is consumed in order; its last element then repeats."""
        if isinstance(response, int):
            response = Response(response)
        responses = list(response) if isinstance(response, (list, tuple)) else [response]
        if not responses:
            raise ValueError("empty response list")
        with self._cond:
            self._scripts[(method.upper() if method else None, path)] = responses

    def _next_response(self, request: Request) -> Response:
        with self._cond:
            queue = self._scripts.get((request.method, request.path)) or self._scripts.get((None, request.path))
            if not queue:
                return self.default
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _record(self, request: Request) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    # ------------------------------------------------------------ assertions

    def wait_for(self, count: int, timeout: float = 10.0, path: str | None = None) -> list[Request]:
        """Block until ``count`` requests (to ``path``, if given) arrived;
        return them. Raises TimeoutError."""

        def matching() -> list[Request]:
            return [r for r in self.requests if path is None or r.path == path]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"HTTP sink got {len(matching())} request(s), expected {count} within {timeout}s")
            return matching()

    def clear(self) -> None:
        """Forget recorded requests and scripted responses."""
        with self._cond:
            self.requests.clear()
            self._scripts.clear()
            self.default = Response(200, json={})

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
        if getattr(self, "_tls_dir", None):
            import shutil

            shutil.rmtree(self._tls_dir, ignore_errors=True)

    def __enter__(self) -> "HttpSink":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<HttpSink {self.base_url} requests={len(self.requests)}>"
