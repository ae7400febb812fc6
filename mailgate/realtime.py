"""Access to the channel layer from any process (web, worker, IDLE manager)."""

from django.conf import settings
from channels.layers import get_channel_layer

from mailgate import embedded_redis


def ensure_embedded_redis() -> None:
    """Start the embedded Redis, or join the one running, when the channel layer uses it. This
    process then holds it until it exits (see mailgate/embedded_redis.py)."""
    if embedded_redis.in_use():
        embedded_redis.ensure_running(settings.MAILGATE_EMBEDDED_REDIS_SOCKET)


def channel_layer():
    ensure_embedded_redis()
    return get_channel_layer()
