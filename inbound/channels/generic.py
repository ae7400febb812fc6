"""Signed JSON: mailgate's own scheme (outgoing.signatures; the outgoing webhook kind sends it,
so one mailgate can feed another). X-Mailgate-Signature is hex HMAC-SHA256 over
"<X-Mailgate-Timestamp>.<body>"; a signature is accepted once (WebhookReplay)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from email.headerregistry import Address

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.utils import timezone

from inbound import receive
from inbound.channels.base import Channel, Reject, read_body
from inbound.models import WebhookReplay
from outgoing import signatures
from pipeline.senders import WEBHOOK_DOMAIN


def identity(payload, body: bytes) -> str:
    provider_id = str(payload.get("id") or "")[:200] if isinstance(payload, dict) else ""
    return f"generic:{provider_id}" if provider_id else f"generic:sha256:{hashlib.sha256(body).hexdigest()}"


class GenericChannel(Channel):
    kind = "generic"
    required_secrets = ("current",)
    optional_secrets = ("previous",)
    secret_labels = {"current": "Signing secret", "previous": "Previous signing secret (while rotating)"}

    def handle(self, request):
        body = read_body(request)
        tolerance = settings.MAILGATE_WEBHOOK_TOLERANCE
        signature = request.headers.get("X-Mailgate-Signature", "").strip().lower()
        if not signatures.signed_json_valid([self.secrets.get("current"), self.secrets.get("previous")],
                                            request.headers.get("X-Mailgate-Timestamp", ""), body, signature,
                                            tolerance=tolerance):
            raise Reject(403, "bad signature or timestamp")
        # A replay row outlives the timestamp window, after which the signature is refused anyway.
        WebhookReplay.objects.filter(seen_at__lt=timezone.now() - timedelta(seconds=2 * tolerance + 60)).delete()
        try:
            payload = json.loads(body)
        except ValueError:
            raise Reject(400, "not JSON") from None
        with transaction.atomic():
            try:
                with transaction.atomic():
                    WebhookReplay.objects.create(channel=self.channel, signature=signature.removeprefix("sha256="))
            except IntegrityError:
                # The very same signed request again: it has no effect. Say which message it made.
                existing = receive.stored(self.channel, identity(payload, body))
                return JsonResponse({"ok": True, "duplicate": True,
                                     "message_id": str(existing.pk) if existing else None}, status=200)
            # A malformed payload raises BadPayload out of this block, so its replay row goes too.
            message, created = self.receive(payload, body)
        return JsonResponse({"ok": True, "message_id": str(message.pk) if message else None,
                             "duplicate": not created}, status=202)

    def receive(self, payload, body: bytes):
        """A signed JSON call → (Message, created).

        {"id": "...", "from": "ada@example.com", "from_name": "Ada", "subject": "...", "text": "...",
         "html": "..."}: text or html required; id (recommended) makes retries idempotent, without
        it the body's digest does.
        """
        channel = self.channel
        if not isinstance(payload, dict):
            raise receive.BadPayload("body: must be a JSON object")
        for field in ("id", "from", "from_name", "subject", "text", "html"):
            if payload.get(field) is not None and not isinstance(payload[field], (str, int)) \
                    or isinstance(payload.get(field), bool):
                raise receive.BadPayload(f"{field}: must be a string")
        text, html = str(payload.get("text") or ""), str(payload.get("html") or "")
        if not text and not html:
            raise receive.BadPayload("text: required (or html)")
        sender = str(payload.get("from") or "").strip()
        if sender:
            try:
                Address(addr_spec=sender)
            except (ValueError, IndexError, TypeError):
                raise receive.BadPayload("from: not an email address") from None
            if "@" not in sender:
                raise receive.BadPayload("from: not an email address")
        provider_id = str(payload.get("id") or "")[:200]
        raw = receive.build_raw(
            from_name=str(payload.get("from_name") or (sender or channel.name)),
            from_address=sender or f"channel-{channel.pk}@{WEBHOOK_DOMAIN}",
            channel=channel, subject=str(payload.get("subject") or f"Message via {channel.name}"),
            text=text, html=html, date=timezone.now(),
            msgid=receive.message_id("hook", channel, provider_id or hashlib.sha256(body).hexdigest()[:32]),
        )
        return receive.ingest(channel, identity(payload, body), raw)
