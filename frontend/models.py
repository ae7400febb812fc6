"""Web UI state: the per-user sequence that numbers live events."""

from django.conf import settings
from django.db import models


class EventSequence(models.Model):
    """The last sequence number handed to a websocket event for this user.

    Incremented with F() in frontend.events, so events from every process (web, worker, IDLE
    manager) are numbered 1, 2, 3, ... per user; a page that sees a gap knows it missed one.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    value = models.BigIntegerField(default=0)

    def __str__(self):
        return f"{self.user_id}: {self.value}"
