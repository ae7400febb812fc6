"""Store an OAuth2 grant: a new account signed in with it, or an existing one reconnected.

Called by the web flow's callback (imap/oauth/flow.py) and `manage.py add_account --oauth`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from imap.accounts import connected_copy, first_sync
from imap.models import Account, OAuthGrant
from imap.oauth import providers
from imap.oauth.providers import Provider
from imap.oauth.tokens import encrypt_tokens, stored_refresh_token

log = logging.getLogger(__name__)


def _grant_values(token: dict) -> dict:
    now = timezone.now()
    access = token.get("access_token") or ""
    expires_in = token.get("expires_in")
    return {
        "tokens_encrypted": encrypt_tokens(token["refresh_token"], access),
        "access_issued_at": now if access else None,
        # No lifetime known: treat it as expired, so the first use refreshes it.
        "access_expires_at": now + timedelta(seconds=int(expires_in)) if access and expires_in else None,
        "scope": token.get("scope") or "",
        "refreshing_until": None, "refreshing_by": "",
    }


@transaction.atomic
def connect_account(*, owner, provider: Provider, token: dict, email: str, display_name: str = "",
                    account: Account | None = None, **extra) -> Account:
    """Create an account for `email` signed in with `token` (needs a refresh_token), or, given
    `account`, replace its grant (Reconnect: same account, its folders and messages kept). The
    first sync starts after commit. Raises ValidationError."""
    if not token.get("refresh_token"):
        raise ValidationError({"token": "The provider returned no refresh token; mailgate cannot stay signed in."})
    if not email:
        raise ValidationError({"email": "The provider did not report the mailbox address."})
    if account is None:
        # Signing in again to a mailbox this owner has connected reconnects that account (its
        # folders and messages kept) rather than adding a second one that relays everything again.
        account = connected_copy(owner, provider.imap_host, email)
    if account is None:
        account = Account(owner=owner, email=email, display_name=display_name or email,
                          host=provider.imap_host, port=provider.imap_port, security=provider.imap_security,
                          username=email, auth_method=Account.AuthMethod.OAUTH2, **extra)
        account.full_clean()
        account.save()
    else:
        if email.lower() != account.email.lower():
            raise ValidationError({"email": f"Signed in as {email}, but this account is {account.email}."})
        # Clears the stopped state and makes the IDLE manager reconnect with the new grant.
        Account.objects.filter(pk=account.pk).update(
            auth_method=Account.AuthMethod.OAUTH2, state=Account.State.NEW, last_error="", auth_failures=0,
            backoff_until=None, backoff_step=0, config_version=F("config_version") + 1, updated_at=timezone.now())
        account.refresh_from_db()
    values = {"provider": provider.key, **_grant_values(token)}
    # The version moves on, so a login refused with the old grant's token never matches the new one.
    if not OAuthGrant.objects.filter(account=account).update(**values, token_version=F("token_version") + 1):
        OAuthGrant.objects.create(account=account, **values)
    first_sync(account)
    return account


def delete_account(account: Account) -> None:
    """Delete `account` and, once that has committed, revoke its OAuth2 grant at the provider
    (RFC 7009) so the refresh token mailgate held is worthless. The revocation is best effort: a
    provider that is down or has no revocation endpoint never blocks the delete."""
    pending = _revocation_of(account)
    account.delete()
    if pending is not None:
        transaction.on_commit(lambda: revoke_at_provider(*pending))


def _revocation_of(account: Account):
    grant = OAuthGrant.objects.filter(pk=account.pk).first()
    if grant is None:
        return None
    try:
        provider = providers.get(grant.provider)
        refresh = stored_refresh_token(grant)
    except Exception as exc:  # noqa: BLE001 - unreadable or unconfigured: nothing to revoke with
        log.info("account %s: grant not revoked at the provider (%s)", account.pk, type(exc).__name__)
        return None
    if not provider.revoke_url:
        log.info("account %s: provider %s has no revocation endpoint", account.pk, grant.provider)
        return None
    return provider, refresh, account.pk


def revoke_at_provider(provider: Provider, refresh_token: str, account_id: int) -> bool:
    """Revoke a refresh token (the grant with it) at the provider; False, logged, when it failed."""
    try:
        answer = provider.client().revoke_token(provider.revoke_url, token=refresh_token,
                                                token_type_hint="refresh_token")
        answer.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - best effort after the delete, never raised into it
        log.warning("account %s: revoking the grant at %s failed: %s", account_id, provider.key,
                    type(exc).__name__)
        return False
    log.info("account %s: grant revoked at %s", account_id, provider.key)
    return True
