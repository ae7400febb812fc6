"""Admin for inbound channels: write-only secrets, and the webhook URL to give the provider."""

from django.conf import settings
from django.contrib import admin
from django.urls import reverse

from inbound.forms import InboundChannelForm
from inbound.models import InboundChannel
from inbound.registry import CHANNELS, channel_class
from outgoing.admin import OwnedAdmin, secret_names_set


@admin.register(InboundChannel)
class InboundChannelAdmin(OwnedAdmin):
    form = InboundChannelForm
    list_display = ["name", "kind", "owner", "enabled", "webhook_url"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["secrets_set", "webhook_url", "created_at"]

    def get_fieldsets(self, request, obj=None):
        names = list(InboundChannelForm.secret_names)
        if obj is not None and obj.kind in CHANNELS:
            used = channel_class(obj.kind).secret_names()
            names = [n for n in names if n in used] + [n for n in names if n not in used]
        return [
            (None, {"fields": ["owner", "name", "kind", "enabled", "token", "webhook_url", "config"]}),
            ("Secrets", {"fields": ["secrets_set", *names, "forget_secrets"]}),
            ("Status", {"fields": ["created_at"]}),
        ]

    @admin.display(description="Secrets stored")
    def secrets_set(self, obj):
        return secret_names_set(obj)

    @admin.display(description="Webhook URL (give this to the provider)")
    def webhook_url(self, obj):
        if not obj or not obj.pk:
            return "Shown after saving."
        return settings.MAILGATE_PUBLIC_BASE_URL.rstrip("/") + reverse("inbound:hook", args=[obj.kind, obj.token])
