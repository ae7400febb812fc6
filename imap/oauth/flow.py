"""The authorization-code flow with PKCE behind "Connect with ..." and Reconnect.

`start` keeps the state, the PKCE verifier, the provider and the account being reconnected in the
user's session and returns the provider's consent URL; `finish` accepts the callback only with
that session's state, exchanges the code (with the verifier) for tokens, and stores the grant
(imap/oauth/grants.py). Authlib builds both requests and parses the answer.
"""

from __future__ import annotations

import secrets

from authlib.common.security import generate_token
from authlib.oauth2 import OAuth2Error
from django.conf import settings
from django.urls import reverse

from imap.models import Account
from imap.oauth import grants, providers
from imap.oauth.http import ProviderHTTPError

SESSION_KEY = "mailgate_oauth_flow"


class FlowError(Exception):
    """The sign-in did not complete; the message is safe to show the user."""


def callback_url() -> str:
    """The redirect URI to register with each provider."""
    return settings.MAILGATE_PUBLIC_BASE_URL.rstrip("/") + reverse("imap:oauth_callback")


def start(request, provider_key: str, account: Account | None = None, return_to: str = "") -> str:
    """The provider's consent URL for a new account, or to reconnect `account`.

    `return_to` is the page (a path of ours) the callback goes back to: the admin and the app's
    account pages share the one redirect URI registered with the provider."""
    try:
        provider = providers.get(provider_key)
    except providers.ProviderNotConfigured as exc:
        raise FlowError(str(exc)) from None
    verifier = generate_token(64)
    url, state = provider.client(redirect_uri=callback_url()).create_authorization_url(
        provider.authorize_url, code_verifier=verifier,
        login_hint=account.email if account else None, **provider.authorize_params)
    request.session[SESSION_KEY] = {"state": state, "verifier": verifier, "provider": provider_key,
                                    "account": account.pk if account else None,
                                    "return_to": return_to if return_to.startswith("/") else ""}
    return url


def return_to(request) -> str:
    """Where the pending flow goes back to ("" for the admin); read before finish() ends it."""
    return (request.session.get(SESSION_KEY) or {}).get("return_to", "")


def finish(request) -> Account:
    """Complete the flow from the callback's query; the account created or reconnected."""
    pending = request.session.pop(SESSION_KEY, None)
    state = request.GET.get("state", "")
    if not pending or not secrets.compare_digest(state, pending["state"]):
        raise FlowError("This sign-in was not started from this browser session (or was already used); "
                        "start again.")
    if request.GET.get("error"):
        raise FlowError(f"The provider did not grant access: {request.GET['error'][:100]}")
    try:
        provider = providers.get(pending["provider"])
        token = provider.client(redirect_uri=callback_url()).fetch_token(
            provider.token_url, code=request.GET.get("code", ""), code_verifier=pending["verifier"],
            grant_type="authorization_code")
    except providers.ProviderNotConfigured as exc:
        raise FlowError(str(exc)) from None
    except OAuth2Error as exc:
        raise FlowError(f"The provider refused the sign-in ({exc.error}).") from None
    except (OSError, ValueError, ProviderHTTPError):
        raise FlowError("The provider could not be reached; try again.") from None
    account = None
    if pending["account"]:
        account = Account.objects.filter(pk=pending["account"], owner=request.user).first()
        if account is None:
            raise FlowError("The account to reconnect is gone.")
    return grants.connect_account(owner=request.user, provider=provider, token=dict(token),
                                  email=provider.address(token), account=account)
