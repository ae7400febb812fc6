"""Inbound webhooks as standard messages: each accepted call becomes an RFC 822 message that enters
the pipeline through the same door as IMAP mail (pipeline.ingest.ingest_raw), deduplicated by the
provider's own id.

The views (outgoing/views.py) check size and signatures; these functions trust their input's
origin but not its shape: a malformed payload raises BadPayload with a text for the 400 answer.

Senders get addresses in reserved .invalid domains (RFC 2606), e.g. +15551234567@sms.mailgate.invalid
for an SMS; sender_ids() tells the phone number or chat id behind one, so a subscriber listed by
phone number is recognised as the sender.
"""

from __future__ import annotations

import datetime
import email.policy
import hashlib
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from django.conf import settings
from django.utils import timezone

from outgoing import telegram_files, twilio_media
from pipeline.ingest import ingest_raw
from pipeline.models import Message

SMS_DOMAIN = "sms.mailgate.invalid"
TELEGRAM_DOMAIN = "telegram.mailgate.invalid"
WEBHOOK_DOMAIN = "webhook.mailgate.invalid"
SYNTHETIC_DOMAINS = (SMS_DOMAIN, TELEGRAM_DOMAIN, WEBHOOK_DOMAIN)
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._+-]")
MAX_TEXT = 1024 * 1024


class BadPayload(ValueError):
    """The call is authentic but not something we can turn into a message (answered with 400)."""


def sender_ids(address: str) -> set[str]:
    """Every identifier a sender address stands for: the address itself and, for the synthetic
    addresses made here, the phone number or Telegram id in its local part."""
    address = (address or "").strip().lower()
    ids = {address} if address else set()
    local, _, domain = address.rpartition("@")
    if domain in SYNTHETIC_DOMAINS and local:
        ids.add(local)
        if local.startswith("tg-"):
            ids.add(local[3:])
    return ids


def _domain() -> str:
    instance = _UNSAFE_ID.sub("-", settings.MAILGATE_INSTANCE_ID or "mailgate").strip(".-") or "mailgate"
    return f"{instance}.mailgate.invalid"


def message_id(kind: str, channel, *provider_ids) -> str:
    """A Message-ID made from the provider's ids: the same SMS or update always gets the same one."""
    local = ".".join(_UNSAFE_ID.sub("_", str(p)) for p in (kind, channel.pk, *provider_ids))
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


def _stored(channel, identity: str):
    """The message a repeated call (the provider retrying one it thinks failed) already stored:
    answering with it spares downloading the call's media again."""
    return Message.objects.filter(channel=channel, identity=identity).first()


def _ingest(channel, identity: str, raw: bytes):
    return ingest_raw(owner=channel.owner, raw=raw, identity=identity, source="webhook", channel=channel)


# ------------------------------------------------------------------ Twilio SMS

PHONE = re.compile(r"^\+?[0-9]{3,20}$")


def receive_twilio(channel, params: list[tuple[str, str]], auth_token: str = ""):
    """An incoming SMS/MMS (Twilio's messaging webhook parameters) → (Message, created). MMS media
    are downloaded and attached (outgoing/twilio_media.py)."""
    fields = dict(params)
    # Messaging webhooks carry MessageSid; a voice webhook pointed here carries CallSid (and maybe
    # the Digits pressed), which is still one event to relay.
    sid = fields.get("MessageSid") or fields.get("SmsSid") or fields.get("CallSid") or ""
    is_call = not (fields.get("MessageSid") or fields.get("SmsSid"))
    sender = fields.get("From", "").strip()
    if not sid or not _UNSAFE_ID.sub("", sid) == sid:
        raise BadPayload("MessageSid: missing or malformed")
    sender = sender or fields.get("Caller", "").strip()
    if not PHONE.match(sender):
        raise BadPayload("From: not a phone number")
    text = fields.get("Body", "")
    if not text and fields.get("Digits"):
        text = f"Digits pressed: {fields['Digits']}"
    identity = f"twilio:{sid}"
    if (known := _stored(channel, identity)) is not None:
        return known, False
    attachments, media = twilio_media.fetch_all(fields, auth_token)
    if media:
        text += "\n\nMedia:\n" + "\n".join(media)
    raw = build_raw(
        from_name=sender, from_address=f"{sender}@{SMS_DOMAIN}", channel=channel,
        subject=f"{'Call' if is_call else 'SMS'} from {sender}", text=text, date=timezone.now(),
        msgid=message_id("sms", channel, sid),
        extra_headers={"X-Mailgate-SMS-To": fields.get("To", "")}, attachments=attachments,
    )
    return _ingest(channel, identity, raw)


# ------------------------------------------------------------------ Telegram

TELEGRAM_MESSAGE_KEYS = ("message", "edited_message", "channel_post", "edited_channel_post")
# Content without a file (files: outgoing/telegram_files.py), noted in the text.
TELEGRAM_NOTES = {"location": "location", "venue": "venue", "contact": "contact", "poll": "poll", "dice": "dice"}


def telegram_update_id(update) -> int:
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int) \
            or isinstance(update.get("update_id"), bool):
        raise BadPayload("update_id: missing or not a number")
    return update["update_id"]


def receive_telegram(channel, update: dict, bot_token: str = ""):
    """A Telegram Update → (Message, created), or (None, False) for updates that carry no message
    (button presses, member changes): Telegram only needs them acknowledged. With the bot's token,
    the message's photo or file is downloaded and attached."""
    update_id = telegram_update_id(update)
    key = next((k for k in TELEGRAM_MESSAGE_KEYS if isinstance(update.get(k), dict)), None)
    if key is None:
        return None, False
    identity = f"tg:{update_id}"
    if (known := _stored(channel, identity)) is not None:
        return known, False
    tg = update[key]
    chat = tg.get("chat") if isinstance(tg.get("chat"), dict) else {}
    user = tg.get("from") if isinstance(tg.get("from"), dict) else {}
    name = " ".join(str(user.get(k) or "") for k in ("first_name", "last_name")).strip()
    if user.get("username"):
        name = f"{name} (@{user['username']})" if name else f"@{user['username']}"
    sender_id = user.get("id") or chat.get("id") or "unknown"
    name = name or str(chat.get("title") or sender_id)
    text = str(tg.get("text") or tg.get("caption") or "")
    attachments, notes = telegram_files.fetch_all(channel, tg, bot_token)
    notes += [f"[{label}]" for field, label in TELEGRAM_NOTES.items() if field in tg]
    if notes:
        text = (text + "\n\n" if text else "") + " ".join(notes)
    subject = f"Telegram from {name}"
    if chat.get("type") not in (None, "private") and chat.get("title"):
        subject += f" in {chat['title']}"
    if key.startswith("edited"):
        subject += " (edited)"
    try:
        date = datetime.datetime.fromtimestamp(int(tg.get("date") or 0), tz=datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        date = timezone.now()
    chat_id, tg_id = chat.get("id", "0"), tg.get("message_id", "0")
    reply = tg.get("reply_to_message") if isinstance(tg.get("reply_to_message"), dict) else {}
    raw = build_raw(
        from_name=name, from_address=f"tg-{_UNSAFE_ID.sub('_', str(sender_id))}@{TELEGRAM_DOMAIN}",
        channel=channel, subject=subject, text=text, date=date,
        # Edits get their own id; replies thread under the message they answer.
        msgid=message_id("tg", channel, chat_id, tg_id, *([f"u{update_id}"] if key.startswith("edited") else [])),
        in_reply_to=message_id("tg", channel, chat_id, reply["message_id"]) if reply.get("message_id") else "",
        extra_headers={"X-Mailgate-Telegram-Chat": str(chat_id)}, attachments=attachments,
    )
    return _ingest(channel, identity, raw)


# ------------------------------------------------------------------ generic signed JSON


def generic_identity(payload, body: bytes) -> str:
    provider_id = str(payload.get("id") or "")[:200] if isinstance(payload, dict) else ""
    return f"generic:{provider_id}" if provider_id else f"generic:sha256:{hashlib.sha256(body).hexdigest()}"


def receive_generic(channel, payload, body: bytes):
    """A signed JSON call → (Message, created).

    {"id": "...", "from": "ada@example.com", "from_name": "Ada", "subject": "...", "text": "...",
     "html": "..."}: text or html required; id (recommended) makes retries idempotent, without it
    the body's digest does.
    """
    if not isinstance(payload, dict):
        raise BadPayload("body: must be a JSON object")
    for field in ("id", "from", "from_name", "subject", "text", "html"):
        if payload.get(field) is not None and not isinstance(payload[field], (str, int)) \
                or isinstance(payload.get(field), bool):
            raise BadPayload(f"{field}: must be a string")
    text, html = str(payload.get("text") or ""), str(payload.get("html") or "")
    if not text and not html:
        raise BadPayload("text: required (or html)")
    sender = str(payload.get("from") or "").strip()
    if sender:
        try:
            Address(addr_spec=sender)
        except (ValueError, IndexError, TypeError):
            raise BadPayload("from: not an email address") from None
        if "@" not in sender:
            raise BadPayload("from: not an email address")
    provider_id = str(payload.get("id") or "")[:200]
    identity = generic_identity(payload, body)
    raw = build_raw(
        from_name=str(payload.get("from_name") or (sender or channel.name)),
        from_address=sender or f"channel-{channel.pk}@{WEBHOOK_DOMAIN}",
        channel=channel, subject=str(payload.get("subject") or f"Message via {channel.name}"),
        text=text, html=html, date=timezone.now(),
        msgid=message_id("hook", channel, provider_id or hashlib.sha256(body).hexdigest()[:32]),
    )
    return _ingest(channel, identity, raw)
