"""Generic webhook: the standard message as a signed JSON POST.

Receivers verify `X-Mailgate-Signature` = hex HMAC-SHA256(secret, "<X-Mailgate-Timestamp>.<body>")
(outgoing.signatures.sign; the inbound generic channel checks the same scheme, so one mailgate can
feed another) and deduplicate on `Idempotency-Key`, which is the delivery id: a retried delivery
carries the same key.
"""

import json
import time

from outgoing import formatting, http, signatures
from outgoing.transports.base import Transport


class WebhookTransport(Transport):
    kind = "webhook"
    required_config = ("url",)
    required_secrets = ("signing_secret",)
    # No limit of our own: a backlog (a history relay, an outage's catch-up) goes out at once, and a
    # receiver that wants less says so with a 429 and Retry-After, which every worker honours.
    default_rate_per_minute = 0

    @classmethod
    def check(cls, config, secrets):
        if config.get("url"):
            problem = http.validate_url(config["url"], "config.url")
            if problem:
                yield "config", problem

    def payload(self, message, delivery) -> dict:
        values = formatting.context(message)
        template = self.config.get("template") or formatting.CHAT_TEMPLATE
        return {
            "delivery_id": str(delivery.pk),
            "message_id": str(message.pk),
            "source": message.source,
            "from": {"name": message.sender_name, "address": message.sender_address},
            "to": message.to,
            "cc": message.cc,
            "subject": message.subject,
            "date": values["date"] or None,
            "text": message.text_body,
            "html": message.html_body,
            "formatted": formatting.plain(formatting.runs(template, values)),
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size, "sha256": a.sha256,
                 "url": formatting.attachment_url(a)}
                for a in formatting.attachments_of(message)
            ],
        }

    def send(self, message, delivery) -> str:
        body = json.dumps(self.payload(message, delivery), ensure_ascii=False).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Mailgate-Timestamp": timestamp,
            "X-Mailgate-Signature": signatures.sign(self.secrets["signing_secret"], timestamp, body),
            "Idempotency-Key": str(delivery.pk),
        }
        response = http.request("POST", self.config["url"], body, headers, timeout=self.timeout)
        data = response.json()
        remote = data.get("id") or data.get("message_id") if isinstance(data, dict) else None
        return str(remote or "")[:500]
