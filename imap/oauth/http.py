"""The HTTP session Authlib's OAuth2Client posts through: stdlib urllib with a timeout.

Authlib builds every request (client authentication, PKCE, grant parameters) and parses every
answer (OAuth2 errors included); it only needs an object with a `requests`-like `post`. mailgate
has no HTTP client package (README "Dependencies and why"), so this is that object in 30 lines.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode

MAX_BODY = 1024 * 1024  # a token answer is a few KB; anything bigger is not one


class ProviderHTTPError(Exception):
    """The provider answered with an HTTP error and no OAuth2 error object."""


class Response:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self.content = body

    def json(self):
        return json.loads(self.content.decode("utf-8"))

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise ProviderHTTPError(f"HTTP {self.status_code}")


class Session:
    def __init__(self, timeout: float):
        self.timeout = timeout

    def post(self, url, data=None, headers=None, auth=None, **_ignored) -> Response:
        headers = dict(headers or {})
        body = urlencode(data or {})
        if auth is not None:  # Authlib's ClientAuth: client_secret_post / _basic / none
            url, headers, body = auth.prepare("POST", url, headers, body)
        request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return Response(answer.status, answer.read(MAX_BODY))
        except urllib.error.HTTPError as exc:  # 400 carries the OAuth2 error object (invalid_grant)
            with exc:
                return Response(exc.code, exc.read(MAX_BODY))
