"""Webhook signatures: Twilio's, and mailgate's own signed JSON (outgoing and inbound alike).

Every comparison goes through hmac.compare_digest, so how long a check takes says nothing about
how much of a guessed signature was right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable

# How far a signed request's timestamp may be from our clock, either way.
DEFAULT_TOLERANCE = 300


def equal(a: str, b: str) -> bool:
    """Constant-time comparison of two texts (bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def twilio_signature(url: str, params: Iterable[tuple[str, str]], auth_token: str) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the full URL (query included) followed by
    every POST parameter's name and value, sorted by name."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def twilio_signer(url: str, params, signature: str, auth_tokens: Iterable[str]) -> str | None:
    """The token among `auth_tokens` that made `signature`, or None. Every token is tried, so how
    long it takes says nothing about which one matched."""
    params = list(params)
    found = None
    for token in auth_tokens:
        if token and signature and equal(twilio_signature(url, params, token), signature) and found is None:
            found = token
    return found


def twilio_valid(url: str, params, signature: str, auth_tokens: Iterable[str]) -> bool:
    return twilio_signer(url, params, signature, auth_tokens) is not None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """mailgate's signature: hex HMAC-SHA256 over b"<timestamp>." + body."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def timestamp_fresh(timestamp: str, *, tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    if not timestamp or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return False
    now = time.time() if now is None else now
    return abs(now - int(timestamp)) <= tolerance


def signed_json_valid(secrets: Iterable[str], timestamp: str, body: bytes, signature: str, *,
                      tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """A generic webhook call is authentic when its timestamp is fresh and the signature matches
    any of the channel's secrets (current and, while rotating, previous)."""
    signature = (signature or "").strip()
    if signature.startswith("sha256="):
        signature = signature[len("sha256="):]
    if not signature or not timestamp_fresh(timestamp, tolerance=tolerance, now=now):
        return False
    return any(equal(sign(secret, timestamp, body), signature.lower()) for secret in secrets if secret)
