"""Status words for people: what the pages and the API's `*_label` fields say instead of field
names, raw IMAP flags, enum keys and ids. One place, so the dashboard, the message page and the
pipeline page never disagree."""

from __future__ import annotations

import re

from django.utils import timezone

from imap.models import Account
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


def account_health(account, idle: dict | None) -> dict:
    """One honest state for an account, from its sync state and its IDLE connection together:
    a connected account whose push connection is down says so, with the error.

    Returns {"key", "label", "detail"}; key is one of ok, push_down, error, stopped, new.
    """
    error = (idle or {}).get("last_error") or account.last_error or ""
    if account.state in (Account.State.AUTH_FAILED, Account.State.NEEDS_CREDENTIALS,
                         Account.State.SIGN_IN_EXPIRED):
        return {"key": "stopped", "label": f"Stopped: {account.get_state_display()}", "detail": account.last_error}
    if not account.enabled:
        return {"key": "stopped", "label": "Turned off", "detail": ""}
    if account.state in (Account.State.ERROR, Account.State.THROTTLED):
        label = "Throttled by the provider" if account.state == Account.State.THROTTLED else "Cannot connect"
        if account.backoff_until and account.backoff_until > timezone.now():
            return {"key": "error", "label": f"{label}; trying again", "detail": account.last_error,
                    "retry_at": account.backoff_until.isoformat()}
        return {"key": "error", "label": f"{label}; trying again", "detail": account.last_error}
    if account.state == Account.State.NEW and not (idle and idle["connected"]):
        return {"key": "new", "label": "Not connected yet", "detail": error}
    if idle and idle["connected"]:
        return {"key": "ok", "label": "Connected, receiving new mail instantly", "detail": ""}
    if idle and idle["leased"]:
        return {"key": "push_down", "label": "Reconnecting", "detail": error}
    return {"key": "ok", "label": "Connected, checking for mail every few minutes", "detail": error}
