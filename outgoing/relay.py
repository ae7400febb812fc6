"""The relay header: what outgoing mail carries so this mailgate knows it again when it comes back.

Transports write it (settings.MAILGATE_RELAY_HEADER); pipeline/loops.py reads it on incoming mail.
"""

from django.conf import settings


def relay_header_value(delivery_id) -> str:
    """The value outgoing transports put in settings.MAILGATE_RELAY_HEADER."""
    return f"{settings.MAILGATE_INSTANCE_ID};{delivery_id}"


def parse_relay_header(value: str) -> tuple[str, str] | None:
    """(instance id, delivery id) from a relay header value, or None if it is not one of ours."""
    if not value or ";" not in value:
        return None
    instance, _, delivery = value.strip().partition(";")
    return instance.strip(), delivery.strip()
