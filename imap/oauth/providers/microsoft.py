from django.conf import settings

from imap.oauth.providers.base import Provider, id_token_claims


class Microsoft(Provider):
    """Microsoft 365 / Outlook.com through the identity platform (v2.0 endpoints) of a tenant."""

    key = "microsoft"
    label = "Microsoft"
    scopes = ("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access", "openid", "email")
    imap_host = "outlook.office365.com"
    authorize_params = {"prompt": "select_account"}

    def __init__(self, client_id: str, client_secret: str = "", tenant: str = "common"):
        super().__init__(client_id, client_secret)
        base = f"https://login.microsoftonline.com/{tenant or 'common'}/oauth2/v2.0"
        self.authorize_url = f"{base}/authorize"
        self.token_url = f"{base}/token"

    @classmethod
    def from_settings(cls):
        provider = super().from_settings()
        if provider is not None:
            provider = cls(provider.client_id, provider.client_secret, settings.MAILGATE_OAUTH_MICROSOFT_TENANT)
        return provider

    def address(self, token: dict) -> str:
        # Work accounts often carry no `email` claim; their sign-in name is the mailbox address.
        claims = id_token_claims(token.get("id_token") or "")
        return str(claims.get("email") or claims.get("preferred_username") or "").strip()
