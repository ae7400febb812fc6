"""Admin for outgoing services: write-only secrets, "Send test" per service. inbound/admin.py
reuses OwnedAdmin and secret_names_set for its channels."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from mailgate.admin_scope import OwnerScopedAdmin
from mailgate.crypto import CredentialsUnreadable
from outgoing import sending
from outgoing.forms import ServiceForm
from outgoing.models import Service
from outgoing.registry import transport_class


def secret_names_set(obj) -> str:
    """Which secrets a service or channel has stored (their names, never their values)."""
    if not obj or not obj.pk:
        return "—"
    try:
        names = sorted(obj.get_secrets())
    except CredentialsUnreadable:
        return "stored secrets cannot be decrypted: enter them again"
    return ", ".join(names) or "none"


class OwnedAdmin(OwnerScopedAdmin):
    """Services and inbound channels: a staff user who is not a superuser sees their own only, and
    what they add is theirs (the owner field is read-only for them, so no other user is listed)."""

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    @method_decorator(sensitive_post_parameters())
    def changeform_view(self, request, *args, **kwargs):
        # Every POSTed value may be a secret: keep them all out of error reports.
        return super().changeform_view(request, *args, **kwargs)


@admin.register(Service)
class ServiceAdmin(OwnedAdmin):
    form = ServiceForm
    list_display = ["name", "kind", "owner", "enabled", "rate_per_minute", "last_success_at", "last_error_at",
                    "send_test_link"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    readonly_fields = ["secrets_set", "send_test_link", "last_success_at", "last_error", "last_error_at",
                       "blocked_until", "bucket_tokens", "bucket_updated_at", "created_at"]
    actions = ["send_test_action"]

    def get_fieldsets(self, request, obj=None):
        secret_names = list(ServiceForm.secret_names)
        if obj is not None and obj.kind:
            used = transport_class(obj.kind).secret_names()
            secret_names = [n for n in secret_names if n in used] + [n for n in secret_names if n not in used]
        return [
            (None, {"fields": ["owner", "name", "kind", "enabled", "config", "rate_per_minute"]}),
            ("Secrets", {"fields": ["secrets_set", *secret_names, "forget_secrets"]}),
            ("Status", {"fields": ["send_test_link", "last_success_at", "last_error", "last_error_at",
                                   "blocked_until", "bucket_tokens", "bucket_updated_at", "created_at"]}),
        ]

    @admin.display(description="Secrets stored")
    def secrets_set(self, obj):
        return secret_names_set(obj)

    @admin.display(description="Test")
    def send_test_link(self, obj):
        if not obj or not obj.pk:
            return "Save the service first."
        return format_html('<a class="button" href="{}">Send test</a>',
                           reverse("admin:outgoing_service_send_test", args=[obj.pk]))

    def get_urls(self):
        return [
            path("<int:service_id>/send-test/", self.admin_site.admin_view(self.send_test_view),
                 name="outgoing_service_send_test"),
        ] + super().get_urls()

    def send_test_view(self, request, service_id):
        service = get_object_or_404(self.get_queryset(request), pk=service_id)
        if not self.has_change_permission(request, service):
            raise PermissionDenied
        transport = transport_class(service.kind)
        result = None
        address = (service.config or {}).get("test_address", "")
        if request.method == "POST":
            address = request.POST.get("address", "").strip()
            ok, text = sending.send_test(service, address)
            (messages.success if ok else messages.error)(request, f"{service.name}: {text}")
            result = {"ok": ok, "text": text}
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "original": service,
            "title": f"Send a test message through {service.name}", "service": service,
            "address": address, "address_label": transport.address_label, "result": result,
            "change_url": reverse("admin:outgoing_service_change", args=[service.pk]),
        }
        return TemplateResponse(request, "admin/outgoing/service/send_test.html", context)

    @admin.action(description="Send a test message (to each service's test_address)")
    def send_test_action(self, request, queryset):
        for service in queryset:
            ok, text = sending.send_test(service)
            (messages.success if ok else messages.error)(request, f"{service.name}: {text}")
