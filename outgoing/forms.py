"""Admin forms for services (and the secrets part inbound/forms.py shares): secrets are write-only.

Each secret is a password field that is never rendered back (render_value=False); leaving it blank
keeps the stored value. The form has a field for every secret name any kind uses, so a validation
error keyed by a secret's name always has a field to show on; the fields a kind does not use are
hidden on its change page.
"""

from __future__ import annotations

import json

from django import forms

from mailgate.admin_widgets import SettingsField
from mailgate.crypto import CredentialsUnreadable
from outgoing.models import Service
from outgoing.registry import TRANSPORTS, transport_class
from outgoing.transports.base import COMMON_CONFIG

SECRET_HELP = "Stored encrypted; never shown again. Leave blank to keep the stored value."


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


def declared_secret_fields(labels: dict[str, str]) -> dict[str, forms.Field]:
    fields = {name: _secret_field(label) for name, label in labels.items()}
    fields["forget_secrets"] = forms.BooleanField(
        required=False, label="Forget stored secrets",
        help_text="Drop every stored secret (then enter the ones this kind needs).")
    return fields


class SecretsFormMixin:
    """Write-only fields for `secret_names` (declared by each form: ServiceForm below,
    inbound.forms.InboundChannelForm) merged into the stored dict."""

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


def config_keys() -> dict[str, list[str]]:
    """Kind -> the config keys it accepts (required first): the settings widget's suggestions."""
    return {kind: list(dict.fromkeys([*transport_class(kind).required_config, *transport_class(kind).optional_config,
                                      *COMMON_CONFIG])) for kind in TRANSPORTS}


def secret_kinds_json() -> str:
    return json.dumps({kind: list(transport_class(kind).secret_names()) for kind in TRANSPORTS})


class ServiceFormBase(SecretsFormMixin, forms.ModelForm):
    secret_names = tuple(service_secret_kinds())
    # Name/value rows instead of a JSON textarea; Service.clean() still validates them per kind.
    config = SettingsField(label="Settings", known_keys=config_keys(),
                           help_text="One setting per row; see docs/outgoing.md. Numbers and true/false are "
                                     "stored as such; put a value in \"quotes\" to keep it as text.")

    class Media:
        # Shows only the selected kind's secret fields and setting names.
        js = ["outgoing/service_form.js"]

    class Meta:
        model = Service
        fields = ["owner", "name", "kind", "enabled", "config", "rate_per_minute"]
        help_texts = {
            "rate_per_minute": "Sends per minute through this service (0 = no limit of our own). Blank: the "
                               "kind's own, no limit for a webhook (its 429 and Retry-After are honoured), "
                               "60 for the others.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hide_unused(set(transport_class(self.instance.kind).secret_names()) if self.instance.pk else None)
        if "kind" in self.fields:
            self.fields["kind"].widget.attrs["data-secret-kinds"] = secret_kinds_json()
        if "rate_per_minute" in self.fields and not self.instance.pk:
            # A new service starts from its kind's limit (Transport.default_rate_per_minute).
            self.fields["rate_per_minute"].required = False
            self.initial.pop("rate_per_minute", None)
            self.fields["rate_per_minute"].initial = None
            self.fields["rate_per_minute"].widget.attrs["placeholder"] = "the kind's own"

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if cleaned.get("rate_per_minute") is None and kind in TRANSPORTS and not self.instance.pk:
            cleaned["rate_per_minute"] = transport_class(kind).default_rate_per_minute
        if kind in TRANSPORTS:
            # Set before Service.clean() runs (in _post_clean), which validates config and secrets.
            self.instance.set_secrets(self.merge_secrets(transport_class(kind).secret_names()))
        return cleaned


ServiceForm = type("ServiceForm", (ServiceFormBase,), {
    "__module__": __name__,
    **declared_secret_fields({
        name: f"{name.replace('_', ' ').capitalize()} ({', '.join(Service.Kind(k).label for k in kinds)})"
        for name, kinds in service_secret_kinds().items()}),
})
