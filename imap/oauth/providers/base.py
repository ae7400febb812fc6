"""What every OAuth2 provider has: endpoints, scopes, its IMAP server, and the Authlib client."""

from __future__ import annotations

import base64
import json

from authlib.oauth2.client import OAuth2Client
from django.conf import settings

from imap.oauth.http import Session


class ProviderNotConfigured(Exception):
    """The provider is unknown or its client id is not set."""


class Provider:
    key = ""
    label = ""
    authorize_url = ""
    token_url = ""
    revoke_url = ""
    scopes: tuple[str, ...] = ()
    imap_host = ""
    imap_port = 993
    imap_security = "ssl"
    # Extra authorization-request parameters (Google needs them to hand out a refresh token).
    authorize_params: dict = {}

    def __init__(self, client_id: str, client_secret: str = ""):
        self.client_id = client_id
        self.client_secret = client_secret

    @classmethod
    def from_settings(cls) -> "Provider | None":
        """The provider as the environment configures it, or None while its client id is unset."""
        prefix = f"MAILGATE_OAUTH_{cls.key.upper()}_"
        client_id = getattr(settings, prefix + "CLIENT_ID", "")
        if not client_id:
            return None
        return cls(client_id, getattr(settings, prefix + "CLIENT_SECRET", ""))

    def client(self, *, redirect_uri: str | None = None) -> OAuth2Client:
        """Authlib's client for this provider: builds the requests, PKCE (S256) included, and
        parses the answers, raising authlib's OAuth2Error for an error object (invalid_grant)."""
        return OAuth2Client(
            Session(settings.MAILGATE_OAUTH_HTTP_TIMEOUT),
            client_id=self.client_id,
            client_secret=self.client_secret,
            # In the body: the one method Google, Microsoft and most others all accept.
            token_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            revocation_endpoint_auth_method="client_secret_post" if self.client_secret else "none",
            scope=" ".join(self.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint=self.token_url,
        )

    def address(self, token: dict) -> str:
        """The mailbox address the provider reports for the signed-in user ("" if none).

        From the ID token's claims. Its signature is not checked: it came straight from the token
        endpoint over TLS in answer to our own code, which OpenID Connect Core 3.1.3.7 accepts in
        place of a signature check.
        """
        claims = id_token_claims(token.get("id_token") or "")
        return str(claims.get("email") or "").strip()


def id_token_claims(id_token: str) -> dict:
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
