"""A local OAuth2 authorization server for tests, which Dovecot's oauth2 passdb also asks.

    with OAuthProvider.start(client_id="mailgate", client_secret="s3cret") as provider:
        provider.sign_in_as = "carol@oauth.test"      # who approves on the consent page
        dc = Dovecot.start(oauth2_introspection_url=provider.url("/introspect"))

Endpoints, as a real provider has them:
  GET  /authorize   the consent page: one "Approve" link (id="approve"), for a person or Playwright
  GET  /approve     redirects to redirect_uri?code=...&state=...
  POST /token       authorization_code (PKCE S256 checked) and refresh_token grants; refresh tokens
                    rotate, and reusing a rotated one revokes the whole grant (as Microsoft does)
  POST /introspect  RFC 7662 for Dovecot: {"active": true, "email": user} for a live access token
  POST /revoke      RFC 7009: revokes the grant the token belongs to

`refresh_requests` counts refresh_token requests per user; `hold_refreshes()` makes refresh answers
wait until `release_refreshes()`, and `refresh_arrived` is set when one is waiting.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from .ports import HOST


@dataclass
class Grant:
    user: str
    scope: str
    refresh_token: str
    revoked: bool = False
    old_refresh_tokens: set = field(default_factory=set)


def _id_token(email: str) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'email': email, 'sub': email})}.sig"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes = b"", content_type="application/json", headers=None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode())

    def do_GET(self) -> None:  # noqa: N802
        provider = self.server.provider
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/authorize":
            page = provider.consent_page(query)
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif parts.path == "/approve":
            location = provider.approve(query)
            self._send(302, b"", "text/plain", {"Location": location})
        else:
            self._send(404)

    def do_POST(self) -> None:  # noqa: N802
        provider = self.server.provider
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = urlsplit(self.path).path
        if path == "/token":
            status, body = provider.token(form, self.headers.get("Authorization"))
            self._json(status, body)
        elif path == "/introspect":
            self._json(200, provider.introspect(form.get("token", "")))
        elif path == "/revoke":
            provider.revoke_token(form.get("token", ""))
            self._json(200, {})
        else:
            self._send(404)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: "OAuthProvider"


class OAuthProvider:
    host = HOST

    def __init__(self, client_id: str, client_secret: str, access_lifetime: float):
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_lifetime = access_lifetime
        self.sign_in_as = ""
        self.scope = "openid email imap"
        self.grants: dict[str, Grant] = {}  # by user
        self.codes: dict[str, dict] = {}
        self.access: dict[str, tuple[str, float]] = {}  # access token -> (user, expires at)
        self.refresh_requests: Counter = Counter()
        self.token_requests: list[dict] = []
        self.introspections = 0
        self.refresh_arrived = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.RLock()
        self._server = _Server((self.host, 0), _Handler)
        self._server.provider = self
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, client_id="mailgate-test", client_secret="test-secret", access_lifetime=3600.0) -> "OAuthProvider":
        self = cls(client_id, client_secret, access_lifetime)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"OAuthProvider:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    # --------------------------------------------------------------- test controls

    def hold_refreshes(self) -> None:
        self.refresh_arrived.clear()
        self._gate.clear()

    def release_refreshes(self) -> None:
        self._gate.set()

    def grant(self, user: str) -> tuple[str, str]:
        """A grant for `user` made directly (as another tool would): (refresh token, access token)."""
        with self._lock:
            refresh = secrets.token_urlsafe(24)
            self.grants[user] = Grant(user, self.scope, refresh)
            return refresh, self._issue_access(user)

    def revoke(self, user: str) -> None:
        with self._lock:
            grant = self.grants.get(user)
            if grant:
                grant.revoked = True
            for token, (owner, _) in list(self.access.items()):
                if owner == user:
                    del self.access[token]

    def live_access_tokens(self, user: str) -> int:
        """How many of `user`'s access tokens have not expired yet."""
        with self._lock:
            now = time.time()
            return sum(1 for owner, expires in self.access.values() if owner == user and expires > now)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.access.clear()

    # --------------------------------------------------------------- endpoints

    def consent_page(self, query: dict) -> str:
        link = "/approve?" + urlencode({k: query.get(k, "") for k in (
            "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope")})
        return (f"<!doctype html><title>Local provider consent</title><h1>Sign in as {html.escape(self.sign_in_as)}"
                f"</h1><p>mailgate asks for: {html.escape(query.get('scope', ''))}</p>"
                f'<a id="approve" href="{html.escape(link)}">Approve</a>')

    def approve(self, query: dict) -> str:
        code = secrets.token_urlsafe(16)
        with self._lock:
            self.codes[code] = {**query, "user": self.sign_in_as}
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return f"{query['redirect_uri']}{separator}{urlencode({'code': code, 'state': query.get('state', '')})}"

    def _client_ok(self, form: dict, authorization: str | None) -> bool:
        if authorization and authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and secret == self.client_secret

    def _issue_access(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        self.access[token] = (user, time.time() + self.access_lifetime)
        return token

    def token(self, form: dict, authorization: str | None) -> tuple[int, dict]:
        self.token_requests.append({k: v for k, v in form.items() if k == "grant_type"})
        if not self._client_ok(form, authorization):
            return 401, {"error": "invalid_client"}
        kind = form.get("grant_type")
        if kind == "authorization_code":
            with self._lock:
                request = self.codes.pop(form.get("code", ""), None)
            if request is None or request["redirect_uri"] != form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "unknown code"}
            verifier = form.get("code_verifier", "").encode()
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
            if request.get("code_challenge_method") != "S256" or challenge != request.get("code_challenge"):
                return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            refresh, access = self.grant(request["user"])
            return 200, self._token_answer(request["user"], refresh, access, id_token=True)
        if kind == "refresh_token":
            self.refresh_arrived.set()
            self._gate.wait(30)
            with self._lock:
                presented = form.get("refresh_token", "")
                grant = next((g for g in self.grants.values()
                              if presented in (g.refresh_token, *g.old_refresh_tokens)), None)
                if grant is not None:
                    self.refresh_requests[grant.user] += 1
                if grant is None or grant.revoked:
                    return 400, {"error": "invalid_grant", "error_description": "grant revoked"}
                if presented != grant.refresh_token:  # reuse of a rotated token: theft, as providers see it
                    grant.revoked = True
                    return 400, {"error": "invalid_grant", "error_description": "refresh token reused"}
                grant.old_refresh_tokens.add(grant.refresh_token)
                grant.refresh_token = secrets.token_urlsafe(24)
                return 200, self._token_answer(grant.user, grant.refresh_token, self._issue_access(grant.user))
        return 400, {"error": "unsupported_grant_type"}

    def _token_answer(self, user: str, refresh: str, access: str, id_token: bool = False) -> dict:
        answer = {"access_token": access, "token_type": "Bearer", "expires_in": self.access_lifetime,
                  "refresh_token": refresh, "scope": self.scope}
        if id_token:
            answer["id_token"] = _id_token(user)
        return answer

    def introspect(self, token: str) -> dict:
        with self._lock:
            self.introspections += 1
            user, expires = self.access.get(token, ("", 0.0))
            if not user or expires < time.time() or self.grants.get(user, Grant(user, "", "", True)).revoked:
                return {"active": False}
            return {"active": True, "email": user, "scope": self.scope, "exp": int(expires)}

    def revoke_token(self, token: str) -> None:
        with self._lock:
            user = self.access.get(token, ("", 0))[0] or next(
                (g.user for g in self.grants.values() if g.refresh_token == token), "")
        if user:
            self.revoke(user)
