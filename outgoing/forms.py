"""Admin forms for services and inbound channels: secrets are write-only.

Each secret is a password field that is never rendered back (render_value=False); leaving it blank
keeps the stored value. The form has a field for every secret name any kind uses, so a validation
error keyed by a secret's name always has a field to show on; the fields a kind does not use are
hidden on its change page.
"""

from __future__ import annotations

import secrets as pysecrets
from urllib.parse import urlsplit

from django import forms

from mailgate.crypto import CredentialsUnreadable
from outgoing.http import validate_url
from outgoing.models import InboundChannel, Service
from outgoing.registry import TRANSPORTS, transport_class

SECRET_HELP = "Stored encrypted; never shown again. Leave blank to keep the stored value."
# Inbound channel kind → its secret names (the first is required).
CHANNEL_SECRETS = {
    InboundChannel.Kind.TWILIO: ("auth_token", "previous_auth_token"),
    InboundChannel.Kind.TELEGRAM: ("secret_token", "bot_token"),
    InboundChannel.Kind.GENERIC: ("current", "previous"),
}
CHANNEL_CONFIG_KEYS = {InboundChannel.Kind.TWILIO: {"public_url"}, InboundChannel.Kind.TELEGRAM: {"api_base"}}
CHANNEL_SECRET_LABELS = {
    "auth_token": "Twilio auth token", "previous_auth_token": "Previous Twilio auth token (while rotating)",
    "secret_token": "Telegram secret token (setWebhook secret_token)",
    "bot_token": "Telegram bot token (optional: to download photos and files sent to the bot)",
    "current": "Signing secret", "previous": "Previous signing secret (while rotating)",
}


def service_secret_kinds() -> dict[str, list[str]]:
    """Secret name → the service kinds that use it."""
    names: dict[str, list[str]] = {}
    for kind in TRANSPORTS:
        for name in transport_class(kind).secret_names():
            names.setdefault(name, []).append(kind)
    return names


def _secret_field(label: str) -> forms.CharField:
    return forms.CharField(
        label=label, required=False, strip=True, help_text=SECRET_HELP,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}))


def _declared_secret_fields(labels: dict[str, str]) -> dict[str, forms.Field]:
    fields = {name: _secret_field(label) for name, label in labels.items()}
    fields["forget_secrets"] = forms.BooleanField(
        required=False, label="Forget stored secrets",
        help_text="Drop every stored secret (then enter the ones this kind needs).")
    return fields


class SecretsFormMixin:
    """Write-only fields for `secret_names` (declared by the classes below) merged into the
    stored dict."""

    secret_names: tuple[str, ...] = ()

    def _hide_unused(self, used: set[str] | None):
        if used is None:
            return
        for name in self.secret_names:
            if name not in used:
                self.fields[name].widget = forms.HiddenInput()

    def stored_secrets(self) -> dict:
        if not self.instance.pk or self.cleaned_data.get("forget_secrets"):
            return {}
        try:
            return self.instance.get_secrets()
        except CredentialsUnreadable:
            return {}  # undecryptable: the required ones must be typed again, which validation asks for

    def merge_secrets(self, kind_names) -> dict:
        merged = {k: v for k, v in self.stored_secrets().items() if k in kind_names}
        for name in kind_names:
            if self.cleaned_data.get(name):
                merged[name] = self.cleaned_data[name]
        return merged


class ServiceFormBase(SecretsFormMixin, forms.ModelForm):
    secret_names = tuple(service_secret_kinds())

    class Meta:
        model = Service
        fields = ["owner", "name", "kind", "enabled", "config", "rate_per_minute"]
        help_texts = {
            "config": "JSON settings for this kind; see docs/outgoing.md. "
                      "Common keys: template, timeout, test_address.",
            "rate_per_minute": "Sends per minute through this service (0 = no limit of our own).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hide_unused(set(transport_class(self.instance.kind).secret_names()) if self.instance.pk else None)

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind in TRANSPORTS:
            # Set before Service.clean() runs (in _post_clean), which validates config and secrets.
            self.instance.set_secrets(self.merge_secrets(transport_class(kind).secret_names()))
        return cleaned


ServiceForm = type("ServiceForm", (ServiceFormBase,), {
    "__module__": __name__,
    **_declared_secret_fields({
        name: f"{name.replace('_', ' ').capitalize()} ({', '.join(Service.Kind(k).label for k in kinds)})"
        for name, kinds in service_secret_kinds().items()}),
})


class InboundChannelFormBase(SecretsFormMixin, forms.ModelForm):
    secret_names = tuple(dict.fromkeys(name for names in CHANNEL_SECRETS.values() for name in names))

    class Meta:
        model = InboundChannel
        fields = ["owner", "name", "kind", "enabled", "token", "config"]
        help_texts = {
            "token": "The unguessable part of the webhook URL. Leave blank to generate one.",
            "config": 'JSON. Twilio: {"public_url": "/path" or "https://…"} when a proxy '
                      'rewrites the public URL Twilio signs. Telegram: {"api_base": "https://…"} for a '
                      "self-hosted Bot API server.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["token"].required = False
        self._hide_unused(set(CHANNEL_SECRETS.get(self.instance.kind, ())) if self.instance.pk else None)

    def clean_token(self):
        return self.cleaned_data.get("token") or pysecrets.token_urlsafe(24)

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        names = CHANNEL_SECRETS.get(kind)
        if not names:
            return cleaned
        merged = self.merge_secrets(names)
        if not merged.get(names[0]):
            self.add_error(names[0], f"secrets.{names[0]}: required for {kind}")
        config = cleaned.get("config") or {}
        if not isinstance(config, dict):
            self.add_error("config", "config: must be a JSON object")
        else:
            unknown = sorted(set(config) - CHANNEL_CONFIG_KEYS.get(kind, set()))
            if unknown:
                self.add_error("config", f"config.{unknown[0]}: unknown key for {kind}")
            if "api_base" in config:
                error = validate_url(config["api_base"], "config.api_base")
                if error:
                    self.add_error("config", error)
            url = config.get("public_url")
            if url is not None and not _public_url_ok(url):
                self.add_error("config", "config.public_url: a path starting with / or an https:// URL")
        self.instance.set_secrets(merged)
        return cleaned


InboundChannelForm = type("InboundChannelForm", (InboundChannelFormBase,), {
    "__module__": __name__, **_declared_secret_fields(CHANNEL_SECRET_LABELS)})


def _public_url_ok(url) -> bool:
    if not isinstance(url, str) or not url:
        return False
    if url.startswith("/"):
        return True
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and bool(parts.hostname)
