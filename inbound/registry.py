"""Channel kind → class path, as outgoing/registry.py does for services. Adding a kind is one
line here, one choice in InboundChannel.Kind and one small module in inbound/channels/."""

from django.utils.module_loading import import_string

CHANNELS = {
    "twilio": "inbound.channels.twilio.TwilioChannel",
    "telegram": "inbound.channels.telegram.TelegramChannel",
    "generic": "inbound.channels.generic.GenericChannel",
}


def channel_class(kind: str):
    try:
        return import_string(CHANNELS[kind])
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {', '.join(sorted(CHANNELS))}") from None


def channel_for(channel):
    """The kind's handler for one InboundChannel row (its secrets decrypted)."""
    return channel_class(channel.kind)(channel)
