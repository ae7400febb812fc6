"""The sweeper: finds work left behind and enqueues it again.

A crashed worker, a task row lost from the queue, a restarted cluster or a changed SECRET_KEY (which
drops signed queued tasks) all leave rows in a non-final state. Every stage is idempotent, so
enqueueing a row twice is harmless; missing one would lose a message. Runs from a Django Q schedule
(see pipeline/schedules.py) and from `manage.py pipeline_sweep`.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from pipeline import audit, claims, clock, events, queue
from pipeline.models import Delivery, Event, Message
from pipeline.queue import Stage

log = logging.getLogger(__name__)

BATCH = 2000
_STAGE_OF = {Message.Status.RECEIVED: Stage.STANDARDIZE, Message.Status.STANDARDIZED: Stage.DISTRIBUTE}


def sweep() -> dict:
    now = clock.now()
    stale = now - timedelta(seconds=settings.MAILGATE_STAGE_DEADLINE)
    lease = claims.db_lease()  # leases by the database's clock (pipeline/claims.py says why)
    unclaimed = Q(claimed_until__isnull=True) | claims.lease_expired()
    counts = {"messages": 0, "due": 0, "abandoned": 0}

    # Messages untouched past the deadline: their task was lost, or the worker died holding them.
    # One task per row: a row whose batch crashed runs alone (pipeline.claims.claim_messages).
    for pk, status, arrival, source in (Message.objects.filter(status__in=list(_STAGE_OF), updated_at__lt=stale)
                                        .filter(unclaimed).values_list("pk", "status", "arrival", "source")[:BATCH]):
        if Message.objects.filter(pk=pk, status=status, updated_at__lt=stale).update(updated_at=now):
            counts["messages"] += 1
            queue.enqueue(_STAGE_OF[status], pk, queue.lane_of(arrival, source))

    # Deliveries that are due and not known to be in the queue (window opened, backoff over,
    # rate limit passed, or the queue row was lost). claimed_until on a waiting row means
    # "enqueued until then".
    for pk, arrival, source in (Delivery.objects.filter(status__in=[Delivery.Status.SCHEDULED, Delivery.Status.RETRYING],
                                                        not_before__lte=now).filter(unclaimed)
                                .order_by("not_before").values_list("pk", "message__arrival", "message__source")[:BATCH]):
        if Delivery.objects.filter(pk=pk, status__in=[Delivery.Status.SCHEDULED, Delivery.Status.RETRYING],
                                   not_before__lte=now).filter(unclaimed).update(claimed_until=lease):
            counts["due"] += 1
            queue.enqueue(Stage.SEND, pk, queue.lane_of(arrival, source))

    # SENDING past its lease: the worker died mid-send. The send may have happened; the target
    # de-duplicates by delivery id, and at least once beats never.
    for delivery in (Delivery.objects.filter(claims.lease_expired(), status=Delivery.Status.SENDING)
                     .select_related("message")[:BATCH]):
        with transaction.atomic():
            if Delivery.objects.filter(claims.lease_expired(), pk=delivery.pk,
                                       status=Delivery.Status.SENDING).update(
                    status=Delivery.Status.RETRYING, claimed_by="", claimed_until=lease, not_before=now,
                    updated_at=now):
                counts["abandoned"] += 1
                delivery.status = Delivery.Status.RETRYING
                audit.record(Event.Kind.CRASHED, delivery.message, delivery,
                             detail=f"lease of {delivery.claimed_by} expired during send; retrying")
                events.delivery_updated(delivery)
                queue.enqueue_on_commit(Stage.SEND, [delivery.pk],
                                        queue.lane_of(delivery.message.arrival, delivery.message.source))
    if any(counts.values()):
        log.info("sweeper re-enqueued %s", counts)
    return counts


def queue_depth(owner=None) -> dict:
    """Rows waiting in each stage (admin index, health); only `owner`'s when given."""
    now = clock.now()
    messages, deliveries = Message.objects.all(), Delivery.objects.all()
    if owner is not None:
        messages, deliveries = messages.filter(owner=owner), deliveries.filter(message__owner=owner)
    waiting = [Delivery.Status.SCHEDULED, Delivery.Status.RETRYING]
    return {
        "standardize": messages.filter(status=Message.Status.RECEIVED).count(),
        "distribute": messages.filter(status=Message.Status.STANDARDIZED).count(),
        "send (due)": deliveries.filter(status__in=waiting, not_before__lte=now).count(),
        "send (waiting)": deliveries.filter(status__in=waiting, not_before__gt=now).count(),
        "sending": deliveries.filter(status=Delivery.Status.SENDING).count(),
        "dead messages": messages.filter(status=Message.Status.DEAD).count(),
        "dead or failed deliveries": deliveries.filter(
            status__in=[Delivery.Status.DEAD, Delivery.Status.FAILED]).count(),
    }
