"""The ground's own state: the per-user sequence that numbers live events (mailgate/realtime.py)."""

from django.conf import settings
from django.db import models


class EventSequence(models.Model):
    """The last sequence number handed to a websocket event for this user.

    Incremented in one statement by mailgate.realtime, so events from every process (web, worker,
    IDLE manager) are numbered 1, 2, 3, ... per user; a page that sees a gap knows it missed one.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    value = models.BigIntegerField(default=0)

    class Meta:
        # The table was created by the frontend app, where this model began; keeping its name made
        # the move a state-only migration.
        db_table = "frontend_eventsequence"

    def __str__(self):
        return f"{self.user_id}: {self.value}"
