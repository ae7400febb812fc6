"""Access to the channel layer from any process (web, worker, IDLE manager)."""

from django.conf import settings
from channels.layers import get_channel_layer


def ensure_embedded_redis() -> None:
    """Start the embedded Redis when no REDIS_URL is configured and the Redis layer is in use."""
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if settings.REDIS_URL or not backend.startswith("channels_redis"):
        return
    from mailgate import embedded_redis

    embedded_redis.ensure_running(settings.MAILGATE_EMBEDDED_REDIS_SOCKET)


def channel_layer():
    ensure_embedded_redis()
    return get_channel_layer()
