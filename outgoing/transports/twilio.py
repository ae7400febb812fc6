"""Twilio SMS: the Messages API, form-encoded with basic auth; long texts split or truncated."""

import logging
import math
import re
from functools import partial

from outgoing import formatting, http
from outgoing.errors import TransportError
from outgoing.transports.base import Transport

API_BASE = "https://api.twilio.com"
# Twilio refuses a Body longer than 1,600 characters (it concatenates up to ten segments).
BODY_LIMIT = 1600
GSM7_BASIC = ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
              "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = "^{}\\[~]|€\f"  # each costs two septets (escape + character)
GSM7 = set(GSM7_BASIC) | set(GSM7_EXTENDED)
# Look-alikes that mail text is full of. One of them outside GSM-7 (a \xa0, a curly quote)
# switches the whole SMS to UCS-2: 70 characters a segment instead of 160, at the same price.
GSM7_LOOKALIKES = str.maketrans({
    "\xa0": " ", "\u2009": " ", "\u202f": " ", "\t": " ", "\u200b": None, "\ufeff": None,
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2026": "...", "\u2022": "*",
})
log = logging.getLogger(__name__)
SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")


def gsm_normalize(text: str) -> str:
    return text.translate(GSM7_LOOKALIKES)


def sms_segments(text: str) -> tuple[str, int]:
    """("GSM-7" or "UCS-2", number of segments) that Twilio will bill for this body."""
    if all(ch in GSM7 for ch in text):
        septets = len(text) + sum(ch in GSM7_EXTENDED for ch in text)
        return "GSM-7", 1 if septets <= 160 else math.ceil(septets / 153)
    units = formatting.utf16_len(text)
    return "UCS-2", 1 if units <= 70 else math.ceil(units / 67)


def _measure(run) -> int:
    return formatting.utf16_len(run[0])


class TwilioTransport(Transport):
    kind = "twilio"
    required_config = ("account_sid",)
    optional_config = ("from_number", "messaging_service_sid", "api_base", "long_messages", "max_parts",
                       "gsm_only")
    required_secrets = ("auth_token",)
    address_label = "phone number (E.164, e.g. +15551234567)"

    @classmethod
    def check(cls, config, secrets):
        if config.get("account_sid") and not SID.match(str(config["account_sid"])):
            yield "config", "config.account_sid: AC followed by 32 hex digits"
        if not config.get("from_number") and not config.get("messaging_service_sid"):
            yield "config", "config.from_number: required (or config.messaging_service_sid)"
        if config.get("from_number") and not PHONE.match(str(config["from_number"])):
            yield "config", "config.from_number: a phone number in E.164 form, e.g. +15551234567"
        if config.get("test_address") and not PHONE.match(str(config["test_address"])):
            yield "config", "config.test_address: a phone number in E.164 form"

    def send(self, message, delivery) -> str:
        to = self.recipient(delivery, "test_address")
        if not PHONE.match(to):
            raise TransportError(f"not a phone number in E.164 form: {to[:40]}", permanent=True)
        template = self.config.get("template") or formatting.SMS_TEMPLATE
        parts = formatting.runs(template, formatting.context(message))
        parts = formatting.with_links(parts, formatting.attachments_of(message))
        if self.config.get("gsm_only", True):
            parts = [(gsm_normalize(t), b) for t, b in parts]
        pieces = formatting.split_runs(parts or [("(empty message)", False)], limit=BODY_LIMIT,
                                       measure=_measure, max_parts=self.max_parts,
                                       note="[truncated: {n} more chars]")
        steps = [partial(self._post, to, formatting.plain(p)) for p in pieces]
        return self.run_steps(delivery, steps)

    def _post(self, to: str, body: str) -> str:
        base = (self.config.get("api_base") or API_BASE).rstrip("/")
        sid = self.config["account_sid"]
        fields = {"To": to, "Body": body}
        if self.config.get("messaging_service_sid"):
            fields["MessagingServiceSid"] = self.config["messaging_service_sid"]
        else:
            fields["From"] = self.config["from_number"]
        response = http.post_form(f"{base}/2010-04-01/Accounts/{sid}/Messages.json", fields,
                                  headers={"Authorization": http.basic_auth(sid, self.secrets["auth_token"])},
                                  timeout=self.timeout)
        data = response.json()
        remote = str(data.get("sid", "")) if isinstance(data, dict) else ""
        encoding, segments = sms_segments(body)
        log.info("twilio: sent %s, %d characters, %s, %d segment(s)", remote, len(body), encoding, segments)
        return remote
