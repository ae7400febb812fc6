"""The live websocket over the Redis channel layer stays up while idle (issue 11, part 2).

channels-redis waits for a consumer's next message with a blocking 5 s BZPOPMIN; redis-py's
default socket timeout is also 5 s, so with the stock connection options every idle consumer's
read timed out, daphne logged the TimeoutError and the browser reconnected in a loop.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.test import Client

from mailgate.realtime import user_group
from tests.servers import procs
from tests.servers.web import start_daphne
from tests.servers.websocket import Closed, WebSocket, expect_silence

SILENCE = 30  # seconds: six of channels-redis's blocking reads, and past daphne's 20 s ping


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def send_event(server, user, data: dict) -> None:
    """What mailgate.realtime publishes, sent straight to the layer the server listens on."""
    async def send():
        layer = RedisChannelLayer(**server.channel_layers()["default"]["CONFIG"])
        try:
            await layer.group_send(user_group(user.pk), {
                "type": "mailgate.event", "event": "message.new", "data": data, "seq": None})
        finally:
            await layer.close_pools()  # its connections belong to this call's event loop

    async_to_sync(send)()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_idle_websocket_stays_open_and_receives_an_event_after_30_s_of_silence(web_server, alice):
    """Both Redis kinds at once: the embedded one (a unix socket in the data dir) and REDIS_URL."""
    embedded = start_daphne("", log_name="web-embedded-redis")
    servers = {"embedded": embedded, "REDIS_URL": web_server}
    log_start = {kind: len(server.log()) for kind, server in servers.items()}  # the shared one has a past
    try:
        cookie = session_cookie(alice)
        sockets = {kind: WebSocket.connect(server.url, "/ws/events/", cookie=cookie, name=kind)
                   for kind, server in servers.items()}
        try:
            expect_silence(list(sockets.values()), SILENCE)
        except Closed as closed:
            kind = str(closed).split(":")[0]
            pytest.fail(f"{closed}\n--- daphne log ---\n{servers[kind].log()[log_start[kind]:][-4000:]}")
        for kind, server in servers.items():
            send_event(server, alice, {"id": kind})
        for kind, ws in sockets.items():
            assert ws.receive_json(timeout=10) == {"type": "message.new", "data": {"id": kind}, "seq": None}
            ws.close()
    finally:
        procs.stop(embedded.proc)
    for kind, server in servers.items():
        log = server.log()[log_start[kind]:]
        for sign in ("Traceback", "TimeoutError", "Exception inside application", "ERROR"):
            assert sign not in log, f"{kind}: {sign} in the daphne log:\n{log[-4000:]}"
