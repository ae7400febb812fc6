"""SASL XOAUTH2 (Google's, also Microsoft's) and OAUTHBEARER (RFC 7628) for IMAP AUTHENTICATE.

Both carry the access token; on refusal the server sends one challenge with a JSON error
({"status": "401", "schemes": "Bearer", "scope": ...}) and waits for the client to end the
exchange (an empty line for XOAUTH2, a single ^A for OAUTHBEARER) before its tagged NO.
"""

from __future__ import annotations

import base64
import json

from imap import errors

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"


def mechanism(capabilities) -> str | None:
    """The mechanism to use with a server stating `capabilities` (upper-cased), or None.

    XOAUTH2 first: it is the one Gmail and Microsoft 365 document and test; OAUTHBEARER where it is
    the only one offered."""
    caps = {c.upper() for c in capabilities}
    for name in (XOAUTH2, OAUTHBEARER):
        if f"AUTH={name}" in caps:
            return name
    return None


def initial_response(mech: str, user: str, token: str, host: str, port: int) -> bytes:
    if mech == OAUTHBEARER:
        return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def abort_response(mech: str) -> bytes:
    """What ends the exchange after the server's error challenge (already decoded form)."""
    return b"\x01" if mech == OAUTHBEARER else b""


def refusal(mech: str | None, challenge: bytes, server_text: str, user: str, where: str) -> errors.ImapError:
    """One clear error for a refused OAuth2 login.

    A 401 (token not accepted) is AuthenticationFailed, which the caller answers with one refresh;
    a scope the grant lacks and IMAP turned off for the mailbox only a person can fix."""
    if mech is None:
        return errors.AuthenticationFailed(
            f"authentication failed: {where} offers neither XOAUTH2 nor OAUTHBEARER for {user}")
    try:
        detail = json.loads(challenge.decode("utf-8")) if challenge else {}
    except ValueError:
        detail = {}
    detail = detail if isinstance(detail, dict) else {}
    status = str(detail.get("status") or "")
    text = server_text.lower()
    if "imap" in text and ("disabled" in text or "not enabled" in text or "not connected" in text):
        # Gmail: "[ALERT] ... IMAP access is disabled"; Microsoft: "User is authenticated but not connected."
        return errors.SignInExpired(f"IMAP is disabled for the mailbox {user} at {where}; enable it, then reconnect")
    if status in ("400", "403") or "insufficient_scope" in json.dumps(detail):
        wanted = detail.get("scope") or "the IMAP scope"
        return errors.SignInExpired(f"wrong scope: the sign-in of {user} lacks {wanted}; reconnect the account")
    return errors.AuthenticationFailed(f"authentication failed: {where} refused the access token of {user} "
                                       f"({mech})")


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
