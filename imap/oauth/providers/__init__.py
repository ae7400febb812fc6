"""The OAuth2 providers: key -> class path, like outgoing/transports/. Each is off until its
client id is set (settings MAILGATE_OAUTH_<NAME>_CLIENT_ID)."""

from __future__ import annotations

from django.utils.module_loading import import_string

from imap.oauth.providers.base import Provider, ProviderNotConfigured

PROVIDERS = {
    "google": "imap.oauth.providers.google.Google",
    "microsoft": "imap.oauth.providers.microsoft.Microsoft",
    "generic": "imap.oauth.providers.generic.Generic",
}

__all__ = ["PROVIDERS", "Provider", "ProviderNotConfigured", "get", "enabled"]


def get(key: str) -> Provider:
    """The configured provider `key`; ProviderNotConfigured when unknown or off."""
    if key not in PROVIDERS:
        raise ProviderNotConfigured(f"unknown OAuth2 provider {key!r}")
    provider = import_string(PROVIDERS[key]).from_settings()
    if provider is None:
        raise ProviderNotConfigured(f"OAuth2 provider {key!r} is not configured (no client id)")
    return provider


def enabled() -> list[Provider]:
    """Every provider whose client id is set, in registry order."""
    found = (import_string(path).from_settings() for path in PROVIDERS.values())
    return [provider for provider in found if provider is not None]
