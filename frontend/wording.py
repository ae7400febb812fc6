"""Status words for people: what the pages and the API's `*_label` fields say instead of field
names, raw IMAP flags, enum keys and ids. One place, so the dashboard, the message page and the
pipeline page never disagree."""

from __future__ import annotations

import re

from imap import account_state
from pipeline.flag_words import flag_words
from pipeline.models import Delivery, Message

MESSAGE_WORDS = {
    Message.Status.HEADERS: "Body still downloading",
    Message.Status.TOO_LARGE: "Too large: only the headers were downloaded",
    Message.Status.GONE: "Deleted on the server before its body was downloaded",
    Message.Status.RECEIVED: "Received, waiting to be parsed",
    Message.Status.STANDARDIZED: "Parsed, waiting to be routed",
    Message.Status.DISTRIBUTED: "Routed",  # message_status() says whether anything was relayed
    Message.Status.SUPPRESSED: "Not relayed (loop, auto-reply or bounce)",
    Message.Status.HISTORY: "Not relayed (was in the mailbox before it was connected)",
    Message.Status.DEAD: "Gave up after repeated errors",
}
DELIVERY_WORDS = {
    Delivery.Status.SCHEDULED: "Scheduled",
    Delivery.Status.SENDING: "Sending",
    Delivery.Status.RETRYING: "Will retry",
    Delivery.Status.SENT: "Sent",
    Delivery.Status.FAILED: "Failed",
    Delivery.Status.DEAD: "Gave up after retries",
    Delivery.Status.CANCELLED: "Cancelled",
}
# Parser warnings (pipeline/parsing) start with a few fixed phrases; the rest are sentences already.
_WARNING_WORDS = [
    (re.compile(r"^date header unparseable: (.*)$", re.S),
     "The Date header could not be read ({0}); the time it arrived is shown instead."),
    (re.compile(r"^no text body: (.*)$", re.S), "This message has no text ({0})."),
    (re.compile(r"^MIME defect in (.*?): (.*)$", re.S), "Part of the message is malformed ({0}: {1})."),
    (re.compile(r"^no From header; sender unknown$"), "The message does not say who sent it."),
]


def flags(values) -> list[str]:
    """Flags as words: see pipeline.flag_words."""
    return flag_words(values)


def message_status(message, delivery_count: int | None = None) -> str:
    """The message's status in words; a routed message that produced no delivery says so
    instead of sounding queued. (How each delivery went is the deliveries' own status.)"""
    if message.status == Message.Status.DISTRIBUTED:
        count = message.deliveries.count() if delivery_count is None else delivery_count
        if not count:
            return "Not relayed: no route matched"
        return f"Routed: {count} deliver{'y' if count == 1 else 'ies'}"
    words = MESSAGE_WORDS.get(message.status, message.get_status_display())
    if message.status == Message.Status.SUPPRESSED and message.suppressed_reason:
        return f"Not relayed ({message.suppressed_reason})"
    return words


def delivery_status(status: str) -> str:
    return DELIVERY_WORDS.get(status, status)


def parse_warning(text: str) -> str:
    for pattern, words in _WARNING_WORDS:
        match = pattern.match(text or "")
        if match:
            return words.format(*match.groups())
    text = (text or "").strip()
    return (text[:1].upper() + text[1:]) if text else text


# One state per account, from its sync state and its push connection: it lives in imap so that
# the account admin (which may not import the frontend) says the same words.
account_health = account_state.health
