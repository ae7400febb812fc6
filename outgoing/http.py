"""The one HTTP client mailgate has (transports, webhook media): stdlib http.client, a timeout, no
redirects, a cap on every body read, and every connection opened by outgoing.egress, which refuses
loopback and private addresses on the address it actually connects to.

Why not urllib.request: it follows redirects (turning a POST into a GET that silently drops the
message) and honours proxy variables from the environment; http.client does neither, and one
function is all the transports need.

Every answer is mapped the same way, so each transport only reads its success body:
  2xx            → HttpResponse
  429            → TransportError(retry_after=Retry-After or the body's retry_after)
  5xx, network   → transient TransportError (the pipeline retries with backoff)
  other statuses → permanent TransportError carrying the service's own error text
Error texts name the host, never the URL: Telegram and Discord put their tokens in the path.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import ssl
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urljoin, urlsplit

from django.conf import settings
from django.utils import timezone

from mailgate.net import is_loopback
from outgoing import egress, keepalive
from outgoing.errors import TransportError
from outgoing.tls import tls_context

DEFAULT_TIMEOUT = 15.0
# An API's answer is a small JSON document; anything bigger is not one we need to read whole.
MAX_RESPONSE_BYTES = 1024 * 1024
# A Retry-After beyond a day is a misconfigured server, not a plan: cap it.
MAX_RETRY_AFTER = 24 * 3600.0
USER_AGENT = "mailgate"


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self):
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def url_problem(value, label: str) -> str | None:
    """An error text for a malformed URL, or None; no DNS. Plain http only to loopback (tests):
    anywhere else it would carry tokens in clear text."""
    if not isinstance(value, str) or not value:
        return f"{label}: must be a URL"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"{label}: not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{label}: must be an http(s) URL with a host"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return f"{label}: plain http is only allowed to a loopback host; use https"
    return None


def validate_url(value, label: str) -> str | None:
    """An error text for a bad API or webhook URL, or None: malformed, or its host is (or resolves
    to) an address egress refuses. Saving early with a clear error; each connection checks again."""
    problem = url_problem(value, label)
    if problem:
        return problem
    problem = egress.host_problem(urlsplit(value).hostname)
    return f"{label}: {problem}" if problem else None


def basic_auth(username: str, password: str) -> str:
    return "Basic " + b64encode(f"{username}:{password}".encode()).decode("ascii")


def post_json(url: str, payload, *, headers=None, timeout=None) -> HttpResponse:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return request("POST", url, body, {"Content-Type": "application/json", **(headers or {})}, timeout=timeout)


def post_form(url: str, fields, *, headers=None, timeout=None) -> HttpResponse:
    body = urlencode(fields, doseq=True).encode("ascii")
    return request("POST", url, body, {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
                   timeout=timeout)


def post_multipart(url: str, fields: dict, files, *, headers=None, timeout=None) -> HttpResponse:
    """`files`: (field name, filename, content type, bytes) tuples."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode())
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        chunks.append(text.encode("utf-8") + b"\r\n")
    for name, filename, content_type, data in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
            f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'.encode())
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return request("POST", url, b"".join(chunks),
                   {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}, timeout=timeout)


def _quote(value: str) -> str:
    # Form-data parameter values are quoted strings: no quotes or line breaks inside.
    return str(value).replace("\\", "\\\\").replace('"', "%22").replace("\r", " ").replace("\n", " ")


def request(method: str, url: str, body: bytes, headers: dict, *, timeout=None,
            max_bytes: int = MAX_RESPONSE_BYTES) -> HttpResponse:
    """One HTTP exchange, checked (see check()). The body read is cut at `max_bytes`: a caller
    that must not get a truncated body (a file) asks for one byte more than it accepts."""
    return check(_exchange(method, url, body, headers, timeout=timeout, max_bytes=max_bytes),
                 urlsplit(url).hostname or "?")


REDIRECTS = (301, 302, 303, 307, 308)


class TimeBudget:
    """Seconds shared by a series of requests that must all end in time (the media downloads of
    one webhook call, answered while the provider waits). Each request's timeout is what is left,
    capped; with less than MIN_SECONDS left, the next request is not started."""

    MIN_SECONDS = 0.5

    def __init__(self, seconds: float, reason: str):
        self.ends = time.monotonic() + seconds
        self.reason = reason

    def timeout(self, cap: float) -> float:
        left = self.ends - time.monotonic()
        if left < self.MIN_SECONDS:
            raise TransportError(f"no time left: {self.reason}", permanent=True)
        return min(cap, left)


def webhook_media_budget() -> TimeBudget:
    """The budget all media downloads of one inbound webhook call share (MMS, Telegram files)."""
    return TimeBudget(settings.MAILGATE_WEBHOOK_MEDIA_SECONDS,
                      "this webhook call's MAILGATE_WEBHOOK_MEDIA_SECONDS are used up")


def get_file(url: str, headers: dict, *, max_bytes: int, timeout=None, follow_redirect: bool = False) -> bytes:
    """GET a file and raise a permanent TransportError when it is bigger than `max_bytes`.

    A redirect is an error unless `follow_redirect` (Twilio's media API answers with one to its
    storage; the caller has checked that the URL is Twilio's): then one is followed, to an http(s)
    URL that connects like any other, and without the Authorization header: credentials stay
    with the API's host."""
    response = _exchange("GET", url, b"", headers, timeout=timeout, max_bytes=max_bytes + 1)
    if follow_redirect and response.status in REDIRECTS and response.headers.get("location"):
        url = urljoin(url, response.headers["location"])
        error = url_problem(url, "redirect")
        if error:
            raise TransportError(error, permanent=True)
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        response = _exchange("GET", url, b"", headers, timeout=timeout, max_bytes=max_bytes + 1)
    body = check(response, urlsplit(url).hostname or "?").body
    if len(body) > max_bytes:
        raise TransportError(f"larger than {max_bytes // (1024 * 1024)} MB", permanent=True)
    return body


class _CheckedConnection:
    """Opens its socket with egress.connect: http.client's connect() (plain and TLS alike) makes
    its socket with self._create_connection((host, port), timeout, source_address), and the TLS
    layer wraps that socket with the host name for SNI and certificate checks."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = self._open

    @staticmethod
    def _open(address, timeout, source_address=None):
        return egress.connect(address[0], address[1], timeout, source_address)


class CheckedHTTPConnection(_CheckedConnection, http.client.HTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedConnection, http.client.HTTPSConnection):
    pass


def _exchange(method: str, url: str, body: bytes, headers: dict, *, timeout, max_bytes: int) -> HttpResponse:
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ in the host
        raise TransportError("invalid URL", permanent=True) from None
    host = parts.hostname or "?"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
    if parts.scheme not in ("http", "https"):
        raise TransportError(f"unsupported URL scheme {parts.scheme!r}", permanent=True)
    try:
        port = parts.port  # ValueError: not a number
        # One context per process (outgoing/tls.py): building one loads the CA store, ~30-60 ms.
        context = tls_context() if parts.scheme == "https" else None
        # Everything the connection was opened under (outgoing/keepalive.py).
        key = (parts.scheme, host, port, id(context), egress.private_allowed())
        return keepalive.exchange(
            key, lambda: _connect(parts.scheme, host, port, timeout, context),
            lambda conn: _round_trip(conn, method, path, body, headers, timeout, max_bytes),
            lambda exc: isinstance(exc, _CLOSED_UNDER_US))
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(f"TLS certificate of {host} not trusted: {exc.verify_message}", permanent=True) from None
    except (http.client.InvalidURL, ValueError):
        # http.client's InvalidURL (a space or control character in the path, a bad port) quotes
        # the whole path, and Telegram and Discord keep their tokens there: name the host only.
        raise TransportError(f"invalid URL or header for {host}", permanent=True) from None
    except (OSError, socket.timeout, http.client.HTTPException) as exc:
        raise TransportError(f"network error talking to {host}: {_describe(exc)}") from None


# What a kept connection the server closed raises at our next request: before any answer came.
_CLOSED_UNDER_US = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    ConnectionAbortedError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


def _connect(scheme: str, host: str, port, timeout: float, context):
    if scheme == "https":
        return CheckedHTTPSConnection(host, port, timeout=timeout, context=context)
    return CheckedHTTPConnection(host, port, timeout=timeout)


def _round_trip(conn, method, path, body, headers, timeout, max_bytes) -> tuple[HttpResponse, bool]:
    """One request on `conn` (new or kept); the answer, and whether the connection may be kept:
    the server did not ask to close it and its body was read to the end."""
    conn.timeout = timeout
    if conn.sock is not None:  # a kept connection: this request's timeout
        conn.sock.settimeout(timeout)
    conn.request(method, path, body=body, headers=headers)
    keepalive.quick_ack(conn.sock)
    resp = conn.getresponse()
    data = resp.read(max_bytes)  # never more, whatever Content-Length or chunking says
    response = HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    return response, resp.isclosed() and not resp.will_close


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
        # Its text quotes what the server sent (BadStatusLine: a non-HTTP service's banner).
        return f"not an HTTP answer ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def check(response: HttpResponse, host: str) -> HttpResponse:
    """Return a 2xx response; raise the mapped TransportError for anything else."""
    status = response.status
    if 200 <= status < 300:
        return response
    text = f"{host} answered HTTP {status}: {error_text(response)}"
    if status == 429 or status == 408 or status >= 500:
        raise TransportError(text, retry_after=retry_after(response))
    raise TransportError(text, permanent=True)


def error_text(response: HttpResponse) -> str:
    """The service's own words: Telegram `description`, Discord/Twilio `message`, Slack's plain text."""
    data = response.json()
    if isinstance(data, dict):
        text = data.get("description") or data.get("message") or data.get("error") or data.get("detail")
        if isinstance(text, str) and text:
            code = data.get("error_code", data.get("code"))
            if code not in (None, "", response.status):
                text = f"{text} (code {code})"
            return text[:500]
    text = response.body.decode("utf-8", "replace").strip()
    return text[:500] or http.client.responses.get(response.status, "error")


def retry_after(response: HttpResponse) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP date), else from a JSON body's
    `retry_after` (Discord) or `parameters.retry_after` (Telegram)."""
    value = response.headers.get("retry-after", "").strip()
    seconds = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(value) - timezone.now()).total_seconds()
            except (TypeError, ValueError, IndexError):
                seconds = None
    if seconds is None:
        data = response.json()
        if isinstance(data, dict):
            candidate = data.get("retry_after")
            if candidate is None and isinstance(data.get("parameters"), dict):
                candidate = data["parameters"].get("retry_after")
            if isinstance(candidate, (int, float)) and not isinstance(candidate, bool):
                seconds = float(candidate)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
