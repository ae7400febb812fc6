"""Twilio: an incoming SMS/MMS (or a voice call's webhook) as form parameters, signed with the
account's auth token over our public URL (X-Twilio-Signature)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone

from inbound import receive, twilio_media
from inbound.channels.base import Channel, Reject, read_body
from outgoing import signatures
from pipeline.senders import SMS_DOMAIN

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
PHONE = re.compile(r"^\+?[0-9]{3,20}$")


class TwilioChannel(Channel):
    kind = "twilio"
    required_secrets = ("auth_token",)
    optional_secrets = ("previous_auth_token",)
    secret_labels = {"auth_token": "Twilio auth token",
                     "previous_auth_token": "Previous Twilio auth token (while rotating)"}
    config_keys = ("public_url",)

    @classmethod
    def check_config(cls, config):
        url = config.get("public_url")
        if url is not None and not _public_url_ok(url):
            yield "config.public_url: a path starting with / or an https:// URL"

    def handle(self, request):
        body = read_body(request)
        try:
            # Twilio signs the decoded parameters, so they must be parsed first; nothing else is
            # done with them before the signature matches.
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                               max_num_fields=1000)
        except (UnicodeDecodeError, ValueError):
            raise Reject(400, "not a form-encoded body") from None
        tokens = [self.secrets.get("auth_token"), self.secrets.get("previous_auth_token")]
        signature = request.headers.get("X-Twilio-Signature", "")
        signer = signatures.twilio_signer(self.signed_url(request), params, signature, tokens)
        if signer is None:
            raise Reject(403, "bad signature")
        self.receive(params, signer)
        return HttpResponse(TWIML_EMPTY, content_type="text/xml")

    def refused(self, reject):
        # Twilio shows a plain-text body in its debugger; it cannot use JSON.
        return HttpResponse(reject.text, status=reject.status, content_type="text/plain; charset=utf-8")

    def signed_url(self, request) -> str:
        """The URL Twilio signed: our public base URL (never the Host or X-Forwarded-* headers,
        which the caller controls) + the path, or the channel's `public_url` when a proxy rewrites
        the path, + the query string as received."""
        base = settings.MAILGATE_PUBLIC_BASE_URL.rstrip("/")
        override = self.config.get("public_url")
        if override:
            url = override if "://" in override else base + "/" + override.lstrip("/")
        else:
            url = base + request.path
        query = request.META.get("QUERY_STRING", "")
        return f"{url}?{query}" if query and "?" not in url else url

    def receive(self, params: list[tuple[str, str]], auth_token: str):
        """Twilio's messaging webhook parameters → (Message, created). MMS media are downloaded
        and attached (inbound/twilio_media.py) with `auth_token`: the token that signed the call.
        A call signed with the previous token (still accepted while rotating, perhaps because it
        leaked) must never make mailgate send the current one."""
        channel = self.channel
        fields = dict(params)
        # Messaging webhooks carry MessageSid; a voice webhook pointed here carries CallSid (and
        # maybe the Digits pressed), which is still one event to relay.
        sid = fields.get("MessageSid") or fields.get("SmsSid") or fields.get("CallSid") or ""
        is_call = not (fields.get("MessageSid") or fields.get("SmsSid"))
        sender = fields.get("From", "").strip()
        if not sid or not receive.UNSAFE_ID.sub("", sid) == sid:
            raise receive.BadPayload("MessageSid: missing or malformed")
        sender = sender or fields.get("Caller", "").strip()
        if not PHONE.match(sender):
            raise receive.BadPayload("From: not a phone number")
        text = fields.get("Body", "")
        if not text and fields.get("Digits"):
            text = f"Digits pressed: {fields['Digits']}"
        identity = f"twilio:{sid}"
        if (known := receive.stored(channel, identity)) is not None:
            return known, False
        attachments, media = twilio_media.fetch_all(fields, auth_token)
        if media:
            text += "\n\nMedia:\n" + "\n".join(media)
        raw = receive.build_raw(
            from_name=sender, from_address=f"{sender}@{SMS_DOMAIN}", channel=channel,
            subject=f"{'Call' if is_call else 'SMS'} from {sender}", text=text, date=timezone.now(),
            msgid=receive.message_id("sms", channel, sid),
            extra_headers={"X-Mailgate-SMS-To": fields.get("To", "")}, attachments=attachments,
        )
        return receive.ingest(channel, identity, raw)


def _public_url_ok(url) -> bool:
    if not isinstance(url, str) or not url:
        return False
    if url.startswith("/"):
        return True
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and bool(parts.hostname)
