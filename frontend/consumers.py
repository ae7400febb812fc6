from channels.generic.websocket import AsyncJsonWebsocketConsumer

from mailgate.realtime import session_group, user_group


class EventsConsumer(AsyncJsonWebsocketConsumer):
    """One group per user, joined server-side from the session: a client cannot pick a group.

    Who receives what is decided when publishing (mailgate.realtime, with the audience from the models), so this
    consumer only forwards; anything a client sends is ignored.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # The user's group carries the events; the session's group only its end (logout closes
        # the sockets opened with that session, see frontend/apps.py).
        self.groups_joined = [user_group(user.pk), session_group(self.scope["session"].session_key)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        pass  # the socket is one-way; commands go through the API (CSRF, access checks)

    async def mailgate_session_ended(self, event):
        await self.close(code=4401)  # as for an anonymous socket: the page's login check takes over

    async def mailgate_event(self, event):
        await self.send_json({"type": event["event"], "data": event["data"], "seq": event.get("seq")})
