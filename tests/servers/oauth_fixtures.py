"""pytest fixtures for OAuth2 tests: the local provider, a Dovecot that asks it, the generic
provider pointed at both, and a mailbox user (registered by tests/conftest.py's pytest_plugins).

    def test_x(alice, provider, generic, oauth_user):
        account = signed_in(alice, provider, generic, oauth_user)

`oauth_env(provider, dovecot)` is the environment a daphne, worker or IDLE manager subprocess
needs to use the same provider and server.
"""

from __future__ import annotations

import itertools

import pytest

from tests.servers.dovecot import Dovecot
from tests.servers.oauth_provider import OAuthProvider

_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def provider():
    with OAuthProvider.start() as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(provider):
    server = Dovecot.start(oauth2_introspection_url=provider.url("/introspect"))
    try:
        yield server
    finally:
        server.stop()


def oauth_env(provider, dovecot) -> dict:
    """MAILGATE_OAUTH_GENERIC_* for a subprocess: the local provider, IMAP at `dovecot`."""
    return {
        "MAILGATE_OAUTH_GENERIC_CLIENT_ID": provider.client_id,
        "MAILGATE_OAUTH_GENERIC_CLIENT_SECRET": provider.client_secret,
        "MAILGATE_OAUTH_GENERIC_AUTHORIZE_URL": provider.url("/authorize"),
        "MAILGATE_OAUTH_GENERIC_TOKEN_URL": provider.url("/token"),
        "MAILGATE_OAUTH_GENERIC_REVOKE_URL": provider.url("/revoke"),
        "MAILGATE_OAUTH_GENERIC_IMAP_HOST": dovecot.host,
        "MAILGATE_OAUTH_GENERIC_IMAP_PORT": str(dovecot.port),
        "MAILGATE_OAUTH_GENERIC_IMAP_SECURITY": "none",
    }


@pytest.fixture
def generic(settings, provider, oauth_dovecot):
    """The generic provider pointed at the local one, its IMAP host at the oauth2 Dovecot."""
    for name, value in oauth_env(provider, oauth_dovecot).items():
        setattr(settings, name, int(value) if name.endswith("_PORT") else value)
    provider.release_refreshes()
    provider.access_lifetime = 3600.0
    from imap.oauth import providers

    return providers.get("generic")


@pytest.fixture
def oauth_user(oauth_dovecot) -> str:
    name = f"oauth{next(_numbers)}@oauth.test"
    oauth_dovecot.add_user(name, f"unused-{name}")  # its password is never used
    return name


def signed_in(owner, provider, generic, user: str, expires_in: float = 3600):
    """An account for `user` signed in with a fresh grant made at the provider."""
    from imap.oauth import grants

    refresh, access = provider.grant(user)
    return grants.connect_account(owner=owner, provider=generic, email=user,
                                  token={"refresh_token": refresh, "access_token": access, "expires_in": expires_in})


def oauth_mail(n: int) -> bytes:
    return (f"From: Bob <bob@example.test>\r\nSubject: OAuth {n}\r\nMessage-ID: <oauth-{n}@example.test>\r\n"
            f"\r\nBody {n}\r\n").encode()


def logins(dovecot, user: str, method: str) -> int:
    """How many times `user` signed in to `dovecot` with SASL `method`, by the server's log."""
    return dovecot.log_text().count(f"Login: user=<{user}>, method={method},")
