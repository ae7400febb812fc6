"""The relay header: what outgoing mail carries so this mailgate knows it again when it comes back.

Transports write it (settings.MAILGATE_RELAY_HEADER); pipeline/loops.py reads it on incoming mail.
"""

from email.parser import BytesHeaderParser

from django.conf import settings

from mailgate import storage

# Marks of earlier hops carried forward, at most: a chain A -> B -> A between two installs is
# caught by A finding its own mark; a longer chain is not worth an unbounded header.
MAX_PRIOR_MARKS = 10
# Where the header block of a stored message is looked for (parsing caps headers at 256 KiB too).
_HEADER_BYTES = 256 * 1024


def relay_header_value(delivery_id) -> str:
    """The value outgoing transports put in settings.MAILGATE_RELAY_HEADER."""
    return f"{settings.MAILGATE_INSTANCE_ID};{delivery_id}"


def parse_relay_header(value: str) -> tuple[str, str] | None:
    """(instance id, delivery id) from a relay header value, or None if it is not one of ours."""
    if not value or ";" not in value:
        return None
    instance, _, delivery = value.strip().partition(";")
    return instance.strip(), delivery.strip()


def prior_marks(message) -> list[str]:
    """The relay marks the relayed message itself arrived with (other installs' hops), read from its
    stored raw header block, so the mail we send carries them on and an install that relayed it
    before recognises it when it comes back. [] for a message without stored bytes (webhooks'
    JSON, the admin's test sample, a digest) or whose file is gone."""
    raw = getattr(message, "raw", None)
    if not raw or not getattr(message, "pk", None):
        return []
    try:
        # A stream, not raw.open(): that would download the whole message from a bucket first.
        with storage.open_stream(raw.name) as fh:
            head = fh.read(_HEADER_BYTES)
    except (OSError, ValueError):  # purged, moved, or no file on this field
        return []
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
    values = BytesHeaderParser().parsebytes(head[:end] + b"\n\n").get_all(settings.MAILGATE_RELAY_HEADER) or []
    marks = []
    for value in values:
        for hop in str(value).split(","):
            hop = " ".join(hop.split())  # unfolded; never a line break of the sender's into our header
            if parse_relay_header(hop) and hop not in marks:
                marks.append(hop)
    return marks[-MAX_PRIOR_MARKS:]
