"""Admin form for inbound channels: write-only secrets (as for services, outgoing/forms.py), and
each kind's secrets and config keys checked by its class (inbound/channels/)."""

from __future__ import annotations

import secrets as pysecrets

from django import forms

from inbound.models import InboundChannel
from inbound.registry import CHANNELS, channel_class
from outgoing.forms import SecretsFormMixin, declared_secret_fields


def secret_labels() -> dict[str, str]:
    """Secret name → admin label, for every kind in the registry."""
    return {name: label for kind in CHANNELS for name, label in channel_class(kind).secret_labels.items()}


class InboundChannelFormBase(SecretsFormMixin, forms.ModelForm):
    secret_names = tuple(secret_labels())

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
        if self.instance.pk and self.instance.kind in CHANNELS:
            self._hide_unused(set(channel_class(self.instance.kind).secret_names()))

    def clean_token(self):
        return self.cleaned_data.get("token") or pysecrets.token_urlsafe(24)

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind not in CHANNELS:
            return cleaned
        kind_class = channel_class(kind)
        merged = self.merge_secrets(kind_class.secret_names())
        for name in kind_class.required_secrets:
            if not merged.get(name):
                self.add_error(name, f"secrets.{name}: required for {kind}")
        config = cleaned.get("config") or {}
        if not isinstance(config, dict):
            self.add_error("config", "config: must be a JSON object")
        else:
            for error in kind_class.config_errors(config):
                self.add_error("config", error)
        self.instance.set_secrets(merged)
        return cleaned


InboundChannelForm = type("InboundChannelForm", (InboundChannelFormBase,), {
    "__module__": __name__, **declared_secret_fields(secret_labels())})
