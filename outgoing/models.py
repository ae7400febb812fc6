"""Outgoing services: one table for every kind, its config validated by the kind's transport."""

import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from mailgate import crypto
from outgoing.registry import TRANSPORTS, transport_class


class EncryptedSecretsMixin(models.Model):
    """A JSON dict of secrets (tokens, passwords), Fernet-encrypted as one blob (services here,
    and inbound.InboundChannel)."""

    secrets_encrypted = models.TextField(blank=True, editable=False)
    encrypted_field = "secrets_encrypted"  # re-encrypted by mailgate.rotation

    class Meta:
        abstract = True

    @classmethod
    def mark_secrets_unreadable(cls, ids) -> int:
        """Rows whose secrets no configured key decrypts: the owner must enter them again (shown
        in last_error where the model has one; the row itself says so when it is next used)."""
        if not hasattr(cls, "last_error"):
            return 0
        return cls.objects.filter(pk__in=list(ids)).update(
            last_error="stored secrets cannot be decrypted with the configured keys; enter them again",
            last_error_at=timezone.now())

    def get_secrets(self) -> dict:
        """Raises crypto.CredentialsUnreadable when no configured key decrypts them."""
        if not self.secrets_encrypted:
            return {}
        return json.loads(crypto.decrypt(self.secrets_encrypted))

    def set_secrets(self, values: dict) -> None:
        self.secrets_encrypted = crypto.encrypt(json.dumps(values)) if values else ""


class Service(EncryptedSecretsMixin):
    encrypted_label = "services"

    class Kind(models.TextChoices):
        SMTP = "smtp", "SMTP"
        WEBHOOK = "webhook", "Webhook (signed JSON POST)"
        TELEGRAM = "telegram", "Telegram bot"
        DISCORD = "discord", "Discord webhook"
        SLACK = "slack", "Slack incoming webhook"
        TWILIO = "twilio", "Twilio SMS"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="services")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    config = models.JSONField(default=dict, blank=True)  # validated per kind (outgoing/transports)
    enabled = models.BooleanField(default=True)
    # Rate limit: a token bucket per service, shared by every worker through this row.
    rate_per_minute = models.PositiveIntegerField(default=60)
    bucket_tokens = models.FloatField(default=0)
    bucket_updated_at = models.DateTimeField(null=True, blank=True)
    blocked_until = models.DateTimeField(null=True, blank=True)  # from the service's Retry-After
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="outgoing_service_unique_name"),
        ]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self):
        # Each kind validates its own config and secrets (outgoing/transports/<kind>.py).
        if self.kind not in TRANSPORTS:
            raise ValidationError({"kind": f"unknown kind {self.kind!r}"})
        try:
            secrets = self.get_secrets()
        except crypto.CredentialsUnreadable:
            raise ValidationError("The stored secrets cannot be decrypted: enter them again.") from None
        transport_class(self.kind).validate(self.config if self.config is not None else {}, secrets)
