from django.conf import settings

from imap.oauth.providers.base import Provider


class Generic(Provider):
    """Any standards-compliant provider, entirely from MAILGATE_OAUTH_GENERIC_* (the tests point
    it at their local authorization server)."""

    key = "generic"

    @classmethod
    def from_settings(cls):
        provider = super().from_settings()
        if provider is None:
            return None
        provider.label = settings.MAILGATE_OAUTH_GENERIC_NAME
        provider.authorize_url = settings.MAILGATE_OAUTH_GENERIC_AUTHORIZE_URL
        provider.token_url = settings.MAILGATE_OAUTH_GENERIC_TOKEN_URL
        provider.revoke_url = settings.MAILGATE_OAUTH_GENERIC_REVOKE_URL
        provider.scopes = tuple(settings.MAILGATE_OAUTH_GENERIC_SCOPES.split())
        provider.imap_host = settings.MAILGATE_OAUTH_GENERIC_IMAP_HOST
        provider.imap_port = settings.MAILGATE_OAUTH_GENERIC_IMAP_PORT
        provider.imap_security = settings.MAILGATE_OAUTH_GENERIC_IMAP_SECURITY
        return provider
