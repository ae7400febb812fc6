"""Inbound calls as standard messages: each accepted call becomes an RFC 822 message that enters
the pipeline through the same door as IMAP mail (pipeline.ingest.ingest_raw), deduplicated by the
provider's own id.

The kinds (inbound/channels/) check size and signatures, then build the message with build_raw;
what they build from is trusted in its origin but not its shape: a malformed payload raises
BadPayload with a text for the 400 answer.

Senders get addresses in reserved .invalid domains (pipeline/senders.py), e.g.
+15551234567@sms.mailgate.invalid for an SMS.
"""

from __future__ import annotations

import email.policy
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from django.conf import settings

from pipeline.ingest import ingest_raw
from pipeline.models import Message
from pipeline.senders import WEBHOOK_DOMAIN

UNSAFE_ID = re.compile(r"[^A-Za-z0-9._+-]")
MAX_TEXT = 1024 * 1024


class BadPayload(ValueError):
    """The call is authentic but not something we can turn into a message (answered with 400)."""


def _domain() -> str:
    instance = UNSAFE_ID.sub("-", settings.MAILGATE_INSTANCE_ID or "mailgate").strip(".-") or "mailgate"
    return f"{instance}.mailgate.invalid"


def message_id(kind: str, channel, *provider_ids) -> str:
    """A Message-ID made from the provider's ids: the same SMS or update always gets the same one."""
    local = ".".join(UNSAFE_ID.sub("_", str(p)) for p in (kind, channel.pk, *provider_ids))
    return f"<{local}@{_domain()}>"


def _line(value) -> str:
    """Header text from untrusted input: one line, bounded."""
    return " ".join(str(value or "").split())[:300]


def _clean_text(value) -> str:
    # JSON can carry lone surrogates, which no email encoding can write.
    return str(value or "").encode("utf-8", "replace").decode("utf-8")[:MAX_TEXT]


def build_raw(*, from_name: str, from_address: str, channel, subject: str, text: str, date, msgid: str,
              html: str = "", in_reply_to: str = "", extra_headers: dict | None = None,
              attachments=()) -> bytes:
    """attachments: (filename, content type, bytes) each, added as MIME attachments."""
    msg = EmailMessage()
    msg["From"] = Address(display_name=_line(from_name), addr_spec=from_address)
    msg["To"] = Address(display_name=_line(channel.name), addr_spec=f"channel-{channel.pk}@{WEBHOOK_DOMAIN}")
    msg["Subject"] = _line(subject)
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = msgid
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    for name, value in (extra_headers or {}).items():
        msg[name] = _line(value)
    msg.set_content(_clean_text(text) or " ")
    if html:
        msg.add_alternative(_clean_text(html), subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def stored(channel, identity: str):
    """The message a repeated call (the provider retrying one it thinks failed) already stored:
    answering with it spares downloading the call's media again."""
    return Message.objects.filter(channel=channel, identity=identity).first()


def ingest(channel, identity: str, raw: bytes):
    """(Message, created): the message enters the pipeline, or the one with this identity is found."""
    return ingest_raw(owner=channel.owner, raw=raw, identity=identity, source="webhook", channel=channel)
