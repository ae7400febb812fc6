"""Relaying history on purpose: the owner's way to send on mail that was in the mailbox before it
was connected (Message.Arrival.HISTORY), which mailgate never relays by itself.

`manage.py relay_history --account ID --since DATE [--dry-run]` and the admin's "Relay history"
action both come here. Each message is moved to STANDARDIZED and queued for distribute, once:
the status UPDATE is conditional, so two relays of the same selection queue each message once, and
distribute's unique (message, subscription) constraint makes a repeated task create nothing.
"""

from django.db import transaction
from django.db.models import Q

from pipeline import audit, clock, events, queue
from pipeline.models import Event, Message
from pipeline.queue import Stage

# History not yet standardized: it is relayed when standardize reaches it.
PENDING = (Message.Status.HEADERS, Message.Status.RECEIVED)


def history(queryset, since=None):
    """The history messages of `queryset` (optionally those dated on or after `since`) that a
    relay would queue, in both states: standardized (HISTORY) and still on their way (PENDING)."""
    rows = queryset.filter(arrival=Message.Arrival.HISTORY).filter(
        status__in=[Message.Status.HISTORY, *PENDING])
    if since is not None:  # a message with no Date header counts from when mailgate stored it
        rows = rows.filter(Q(date__gte=since) | Q(date__isnull=True, received_at__gte=since))
    return rows


def relay(queryset, since=None, *, dry_run: bool = False, by: str = "the owner") -> int:
    """Relay the history in `queryset` (see history()); returns how many messages it queued (or,
    with dry_run, would queue)."""
    selected = history(queryset, since)
    if dry_run:
        return selected.count()
    relayed = 0
    for message in selected.order_by("received_at", "pk").iterator():
        with transaction.atomic():
            now = clock.now()
            if message.status == Message.Status.HISTORY:
                moved = Message.objects.filter(pk=message.pk, status=Message.Status.HISTORY).update(
                    status=Message.Status.STANDARDIZED, arrival=Message.Arrival.NEW, suppressed_reason="",
                    attempts=0, claimed_by="", claimed_until=None, updated_at=now)
                if moved:
                    # Old mail, however many: never ahead of what just arrived.
                    queue.enqueue_on_commit(Stage.DISTRIBUTE, [message.pk], queue.Lane.BULK)
            else:  # not standardized yet: standardize sends it on to distribute like new mail
                moved = Message.objects.filter(pk=message.pk, status__in=PENDING,
                                               arrival=Message.Arrival.HISTORY).update(
                    arrival=Message.Arrival.NEW, updated_at=now)
            if moved:
                relayed += 1
                message.refresh_from_db(fields=["status", "arrival", "suppressed_reason"])
                audit.record(Event.Kind.REQUEUED, message, detail=f"history relayed by {by}")
                events.message_updated(message)
    return relayed
