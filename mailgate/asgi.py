"""ASGI entry point: HTTP through Django, websockets through Channels (see frontend/routing.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailgate.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from frontend.routing import websocket_urlpatterns  # noqa: E402
from mailgate import request_limits  # noqa: E402
from mailgate.realtime import ensure_embedded_redis  # noqa: E402

ensure_embedded_redis()
# Bodies over MAILGATE_MAX_REQUEST_BYTES are refused by daphne itself, before either daphne or
# Django buffers them (mailgate/request_limits.py).
request_limits.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
