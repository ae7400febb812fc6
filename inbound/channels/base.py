"""The base every inbound channel kind extends, and what every hook shares: the body limit and
the refusal.

Order of checks on every call (inbound/views.py, then the kind's handle()): POST only (405) → an
enabled channel of that kind (404) → size (413, by Content-Length and by what is actually read)
→ signature (403, constant-time) → only then is the payload interpreted (400 when malformed) and
a message created (inbound/receive.py).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from mailgate.crypto import CredentialsUnreadable

log = logging.getLogger(__name__)


class Reject(Exception):
    """A call refused before it became a message: `status` and `text` are the answer."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


def read_body(request) -> bytes:
    """The request body, refusing more than MAILGATE_WEBHOOK_MAX_BYTES whatever Content-Length says."""
    limit = settings.MAILGATE_WEBHOOK_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared:
        if not declared.isdigit():
            raise Reject(400, "bad Content-Length")
        if int(declared) > limit:
            raise Reject(413, f"body larger than {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise Reject(413, f"body larger than {limit} bytes")
    return body


class Channel:
    """One inbound kind: its secrets and config keys, how a call is authenticated, and how its
    payload becomes a message. Subclasses set the names below and implement handle()."""

    kind = ""
    # Names of the channel's secrets (InboundChannel.get_secrets()), with their admin labels.
    required_secrets: tuple[str, ...] = ()
    optional_secrets: tuple[str, ...] = ()
    secret_labels: dict[str, str] = {}
    config_keys: tuple[str, ...] = ()

    def __init__(self, channel):
        self.channel = channel
        self.config = channel.config or {}
        self.secrets = _secrets(channel)

    @classmethod
    def secret_names(cls) -> tuple[str, ...]:
        return cls.required_secrets + cls.optional_secrets

    @classmethod
    def config_errors(cls, config: dict) -> list[str]:
        """What is wrong with a config dict, for the admin form."""
        unknown = sorted(set(config) - set(cls.config_keys))
        errors = [f"config.{unknown[0]}: unknown key for {cls.kind}"] if unknown else []
        return errors + list(cls.check_config(config))

    @classmethod
    def check_config(cls, config: dict):
        """Kind-specific checks of the known keys: yield error texts."""
        return ()

    def handle(self, request) -> HttpResponse:
        """Authenticate the call, then make its message. Raises Reject, or receive.BadPayload for
        a payload that is authentic but malformed."""
        raise NotImplementedError

    def refused(self, reject: Reject) -> HttpResponse:
        return JsonResponse({"ok": False, "error": reject.text}, status=reject.status)


def _secrets(channel) -> dict:
    try:
        return channel.get_secrets()
    except CredentialsUnreadable:  # nothing can be verified, so nothing is accepted
        log.warning("webhook channel %s: secrets do not decrypt; rejecting every call", channel.pk)
        return {}
