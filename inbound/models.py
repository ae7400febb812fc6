"""Inbound webhook channels, the second door into the pipeline, and the replay guard of signed calls.

Both tables kept the names they had when these models lived in the outgoing app (db_table): the
move changed where the code is, not the data.
"""

from django.conf import settings
from django.db import models

from outgoing.models import EncryptedSecretsMixin


class InboundChannel(EncryptedSecretsMixin):
    """A second door into the pipeline: /hooks/<kind>/<token>/ receives SMS, chat or signed JSON.
    Each kind's secrets, config keys and checks: inbound/channels/<kind>.py."""

    encrypted_label = "inbound channels"

    class Kind(models.TextChoices):
        TWILIO = "twilio", "Twilio SMS"
        TELEGRAM = "telegram", "Telegram bot"
        GENERIC = "generic", "Signed JSON"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="channels")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    # Unguessable path segment; not a secret on its own (signatures are checked too).
    token = models.CharField(max_length=64, unique=True)
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "outgoing_inboundchannel"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="outgoing_channel_unique_name"),
        ]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"


class WebhookReplay(models.Model):
    """Signatures already accepted, so a replayed request has no effect."""

    channel = models.ForeignKey(InboundChannel, on_delete=models.CASCADE, related_name="+")
    signature = models.CharField(max_length=200)
    seen_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "outgoing_webhookreplay"
        constraints = [
            models.UniqueConstraint(fields=["channel", "signature"], name="outgoing_webhook_replay_once"),
        ]
