"""A valid access token for an OAuth2 account, refreshed by one process at a time.

Providers that rotate refresh tokens (Microsoft, most others) hand out a new one with every refresh
and treat a second use of the old one as theft: they revoke the whole grant. Several workers and
IDLE managers need tokens for the same account at the same moment, so a refresh is claimed with a
compare-and-set on the grant row (`refreshing_until`, like the pipeline's stage claims): the winner
spends the refresh token and writes the new pair; the others wait for `token_version` to move and
use what it wrote. Nothing is held open across the HTTP call, so this works the same on SQLite and
PostgreSQL. A claim whose holder died expires after CLAIM_SECONDS.

A token is refreshed MAILGATE_OAUTH_REFRESH_LEEWAY seconds before it expires (at most half its
lifetime before), and once more when the server refuses it (`stale_version`). `invalid_grant` stops
the account at SIGN_IN_EXPIRED at once, so no other process spends a request on it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from authlib.oauth2 import OAuth2Error
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from imap import account_state, errors
from imap.models import Account, OAuthGrant
from imap.oauth import providers
from imap.oauth.http import ProviderHTTPError
from mailgate import crypto

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
# Errors after which only a new sign-in helps (RFC 6749 5.2).
SIGN_IN_ERRORS = {"invalid_grant", "invalid_scope", "unauthorized_client"}
EXPIRED_TEXT = "the provider refused the sign-in ({}: consent revoked or expired); reconnect the account"


@dataclass(frozen=True)
class AccessToken:
    value: str = ""
    version: int = 0

    def __repr__(self) -> str:  # never in a log or a traceback
        return f"AccessToken(version={self.version})"


def claim_seconds() -> float:
    # Longer than one token request can take, so a live holder never loses its claim.
    return 2 * settings.MAILGATE_OAUTH_HTTP_TIMEOUT + 5


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:200]


def encrypt_tokens(refresh_token: str, access_token: str = "") -> str:
    return crypto.encrypt(json.dumps({"refresh_token": refresh_token, "access_token": access_token}))


def _tokens(grant: OAuthGrant) -> dict:
    try:
        return json.loads(crypto.decrypt(grant.tokens_encrypted))
    except crypto.CredentialsUnreadable:
        raise errors.SignInExpired(
            "the stored sign-in cannot be decrypted with the configured keys; reconnect the account") from None


def stored_refresh_token(grant: OAuthGrant) -> str:
    """The grant's refresh token, decrypted (for revoking it); never log it."""
    return _tokens(grant)["refresh_token"]


def _fresh(grant: OAuthGrant, now) -> bool:
    if not grant.access_expires_at:
        return False
    lifetime = (grant.access_expires_at - (grant.access_issued_at or now)).total_seconds()
    leeway = min(settings.MAILGATE_OAUTH_REFRESH_LEEWAY, max(lifetime, 0) / 2)
    return (grant.access_expires_at - now).total_seconds() > leeway


def access_token(account_id: int, *, stale_version: int | None = None,
                 timeout: float | None = None) -> AccessToken:
    """The account's access token, refreshed first when it is about to expire or when it is
    still `stale_version` (the server refused that one). Raises SignInExpired, ProviderUnreachable
    (retry later) or AuthenticationFailed (the provider refused mailgate's client credentials)."""
    deadline = time.monotonic() + (timeout or claim_seconds() + settings.MAILGATE_OAUTH_HTTP_TIMEOUT)
    waiting = False
    while True:
        grant = OAuthGrant.objects.select_related("account").filter(pk=account_id).first()
        if grant is None:
            raise errors.SignInExpired("the account has no OAuth2 sign-in; connect it again")
        if grant.account.state == Account.State.SIGN_IN_EXPIRED:
            raise errors.SignInExpired(grant.account.last_error or Account.State.SIGN_IN_EXPIRED.label)
        tokens = _tokens(grant)
        now = timezone.now()
        if tokens.get("access_token") and _fresh(grant, now) and grant.token_version != stale_version:
            return AccessToken(tokens["access_token"], grant.token_version)
        holder = _holder()
        claimed = OAuthGrant.objects.filter(pk=account_id, token_version=grant.token_version).filter(
            Q(refreshing_until__isnull=True) | Q(refreshing_until__lt=now)).update(
            refreshing_until=now + timedelta(seconds=claim_seconds()), refreshing_by=holder)
        if claimed:
            return _refresh(grant, tokens, holder)
        if not waiting:
            waiting = True
            log.info("account %s: waiting for the token refresh another process is doing", account_id)
        if time.monotonic() > deadline:
            raise errors.ProviderUnreachable("timed out waiting for another process to refresh the sign-in")
        time.sleep(POLL_SECONDS)  # the holder's UPDATE moves token_version within one token request


def _release(grant: OAuthGrant, holder: str) -> None:
    OAuthGrant.objects.filter(pk=grant.pk, refreshing_by=holder).update(refreshing_until=None, refreshing_by="")


def _refresh(grant: OAuthGrant, tokens: dict, holder: str) -> AccessToken:
    account = grant.account
    try:
        provider = providers.get(grant.provider)
        answer = provider.client().refresh_token(provider.token_url, refresh_token=tokens["refresh_token"])
    except OAuth2Error as exc:
        _release(grant, holder)
        code = exc.error or "error"
        if code in SIGN_IN_ERRORS:
            error = errors.SignInExpired(EXPIRED_TEXT.format(code))
            # Recorded here, before anyone else looks, so no other process tries the dead grant.
            account_state.record_failure(account, error)
            raise error from None
        raise errors.AuthenticationFailed(f"the provider refused mailgate's client ({code}); check "
                                          f"MAILGATE_OAUTH_{grant.provider.upper()}_*") from None
    except providers.ProviderNotConfigured as exc:
        _release(grant, holder)
        raise errors.ProviderUnreachable(str(exc)) from None
    except (OSError, ValueError, KeyError, ProviderHTTPError) as exc:
        _release(grant, holder)
        raise errors.ProviderUnreachable(f"provider unreachable: token endpoint of {grant.provider}: "
                                         f"{type(exc).__name__}") from None
    access = answer.get("access_token") or ""
    if not access:
        _release(grant, holder)
        raise errors.ProviderUnreachable(f"the {grant.provider} token endpoint answered without an access token")
    now = timezone.now()
    # A provider that rotates sends a new refresh token; one that does not keeps the old valid.
    refresh = answer.get("refresh_token") or tokens["refresh_token"]
    OAuthGrant.objects.filter(pk=grant.pk, refreshing_by=holder).update(
        tokens_encrypted=encrypt_tokens(refresh, access),
        access_issued_at=now,
        access_expires_at=now + timedelta(seconds=int(answer.get("expires_in") or 3600)),
        scope=answer.get("scope") or grant.scope,
        token_version=F("token_version") + 1,
        refreshing_until=None, refreshing_by="", refreshed_at=now)
    log.info("account %s: access token refreshed", grant.pk)
    return AccessToken(access, grant.token_version + 1)
