"""distribute + queue: match routes, then one Delivery per active subscription of each matched
service, scheduled by pipeline.scheduling. One transaction, so a message is either DISTRIBUTED
with all its deliveries or still STANDARDIZED; the unique (message, subscription) constraint makes
a second run create nothing.
"""

import logging

from django.conf import settings
from django.db import transaction

from pipeline import audit, claims, clock, events, queue, routing, scheduling, sending
from pipeline.models import Delivery, Event, Message, Subscription
from pipeline.queue import Stage
from pipeline.senders import sender_ids

log = logging.getLogger(__name__)


def is_sender(subscription: Subscription, sender_address: str, sender: set[str] | None = None) -> bool:
    """Never relay a message back to the person who sent it (same address or same subscriber).

    An SMS or chat message carries a synthetic address (+15551230000@sms.mailgate.invalid); its
    sender is also known by the phone number or chat id alone, which is how a subscriber lists it.
    Pass `sender` (sender_ids of the address) when checking many subscriptions of one message."""
    ids = sender if sender is not None else sender_ids(sender_address)
    if not ids:
        return False
    if (subscription.address or "").strip().lower() in ids:
        return True
    return any(str(a).strip().lower() in ids for a in (subscription.subscriber.addresses or []))


def queue_deliveries(message: Message, services, now, subscriptions=None, existing=None) -> list[Delivery]:
    """Create the deliveries of `message` to `services` (inside the caller's transaction); returns
    those created by this call. Rows that already exist are left as they are. A batch passes what
    it read once for all its messages (_Lookups): `subscriptions` of these services and the
    subscription ids that `existing` deliveries of this message have."""
    new = new_deliveries(message, services, now, subscriptions, existing)
    # The ids are made here (UUIDs), so the rows need no re-read. A row that another worker
    # inserted meanwhile is skipped by ignore_conflicts; then our audit row for it fails its
    # foreign key at commit and the whole distribute rolls back (only possible after a lost claim,
    # which rolls back anyway).
    Delivery.objects.bulk_create(new, ignore_conflicts=True)
    return new


def new_deliveries(message: Message, services, now, subscriptions=None, existing=None) -> list[Delivery]:
    """The unsaved deliveries queue_deliveries would create (see there)."""
    if not services:
        return []
    if subscriptions is None:
        subscriptions = _subscriptions(services)
    if existing is None:
        existing = set(Delivery.objects.filter(message=message).values_list("subscription_id", flat=True))
    sender = sender_ids(message.sender_address)
    lease = claims.db_lease()  # on the database's clock, as every lease (pipeline/claims.py)
    created = []
    for subscription in subscriptions:
        if subscription.pk in existing or is_sender(subscription, message.sender_address, sender):
            continue
        not_before = scheduling.next_send_time(subscription, now)
        due = not_before <= now
        created.append(Delivery(
            message=message, subscription=subscription, service=subscription.service,
            address=subscription.address, not_before=not_before,
            # claimed_until on a SCHEDULED row marks "already in the task queue": the sweeper
            # leaves it alone until the lease passes (see pipeline.sweeper).
            claimed_until=lease if due else None,
        ))
    return created


def _subscriptions(services) -> list[Subscription]:
    return list(Subscription.objects.filter(service__in=services, active=True)
                .select_related("subscriber", "service").order_by("pk"))


def distribute(message_id) -> str:
    """One message (tests, benches); see distribute_batch."""
    return distribute_batch([message_id])


def distribute_batch(message_ids, handed_on: bool = False) -> str:
    """Stage task body for a batch of messages; returns what happened (for logs and tests).

    One conditional UPDATE claims the batch (claims.claim_messages). The first message of a batch
    of several, one `handed_on` by standardize (which then claims no companions), or a message
    alone with MAILGATE_HAND_ON_ALONE goes on alone: its own transaction, and its due deliveries
    sent right here once it commits (see standardize_batch). The others are distributed together: routes, subscriptions and existing
    deliveries read once, then ONE transaction writes every message's deliveries, status and audit
    rows, with one live hint per audience (_write_together). Should that transaction fail (an
    error, a claim lost meanwhile), each message is redone in a transaction of its own, so one
    message's failure is its own (crash_boundary; the sweeper retries it after the deadline).
    The due deliveries go into send tasks of MAILGATE_SEND_BATCH."""
    messages = claims.claim_messages(message_ids, Message.Status.STANDARDIZED, companions=not handed_on)
    outcomes, due = [], []
    with claims.each_message(Message.Status.STANDARDIZED, "distribute") as each:

        def alone(message: Message) -> list:
            if (result := each(message, _distribute_one, message)) is None:
                return []
            outcomes.append(result[0])
            return result[1]

        if messages and (handed_on or len(messages) > 1 or settings.MAILGATE_HAND_ON_ALONE):
            head, messages = messages[0], messages[1:]
            if mine := alone(head):
                # Outside a transaction on_commit runs at once; inside one (a test), at its commit.
                transaction.on_commit(lambda: _send_now(mine))
        if len(messages) > 1:
            lookups = _Lookups(messages)
            plans = [plan for message in messages if (plan := each(message, lookups.plan, message))]
            try:
                due += _write_together(plans, lookups.now)
                outcomes += ["distributed"] * len(plans)
            except Exception:
                log.warning("distribute of %d messages together failed; each again alone", len(plans),
                            exc_info=True)
                for plan in plans:
                    due += alone(plan.message)
        else:
            for message in messages:
                due += alone(message)
        # Their rows carry a lease meaning "in the queue": if this enqueue is lost, the sweeper
        # queues them when it passes.
        queue.enqueue_many(Stage.SEND, due)
    if len(message_ids) == 1:
        return outcomes[0] if outcomes else "skipped"
    return f"distributed {outcomes.count('distributed')} of {len(message_ids)}"


class _Plan:
    """One message of a batch, routed: its matched services and its unsaved new deliveries."""

    def __init__(self, message: Message, services: list, deliveries: list[Delivery]):
        self.message, self.services, self.deliveries = message, services, deliveries


class _Lookups:
    """What a batch's messages share, read once: each owner's routes, the subscriptions of each
    set of services, the deliveries the messages already have (a re-run creates none again)."""

    def __init__(self, messages: list[Message]):
        self.now = clock.now()
        self._links, self._subscriptions = {}, {}
        self._existing: dict = {}
        for message_id, subscription_id in Delivery.objects.filter(
                message_id__in=[m.pk for m in messages]).values_list("message_id", "subscription_id"):
            self._existing.setdefault(message_id, set()).add(subscription_id)

    def plan(self, message: Message) -> _Plan:
        if message.owner_id not in self._links:
            self._links[message.owner_id] = routing.route_links(message.owner_id)
        services = routing.matching_services(message, self._links[message.owner_id])
        key = tuple(s.pk for s in services)
        if services and key not in self._subscriptions:
            self._subscriptions[key] = _subscriptions(services)
        deliveries = new_deliveries(message, services, self.now, self._subscriptions.get(key, []),
                                    self._existing.get(message.pk, set()))
        return _Plan(message, services, deliveries)


class _ClaimLost(Exception):
    """A message of the batch was no longer ours at the write: redo each alone."""


def _write_together(plans: list[_Plan], now) -> list:
    """Write a batch's plans in one transaction; returns the ids of the due deliveries."""
    if not plans:
        return []
    ids = [plan.message.pk for plan in plans]
    with transaction.atomic():
        # Ours alone (one UUID each, ignore_conflicts): a row another worker inserted after a lost
        # claim fails our audit row's foreign key at commit, and the whole batch goes again alone.
        Delivery.objects.bulk_create([d for plan in plans for d in plan.deliveries], ignore_conflicts=True)
        moved = Message.objects.filter(pk__in=ids, status=Message.Status.STANDARDIZED,
                                       claimed_by=audit.worker_name()).update(
            status=Message.Status.DISTRIBUTED, claimed_by="", claimed_until=None, attempts=0, updated_at=now)
        if moved != len(ids):
            raise _ClaimLost(f"{len(ids) - moved} of {len(ids)} claims lost")  # rolls back
        rows = []
        for plan in plans:
            plan.message.status = Message.Status.DISTRIBUTED
            rows += _audit_rows(plan.message, plan.services, plan.deliveries)
        audit.record_all(rows)
        # One hint per audience: a message page refreshes its deliveries on it too.
        events.messages_changed([plan.message for plan in plans], "message.updated")
    return [d.pk for plan in plans for d in plan.deliveries if d.not_before <= now]


def _audit_rows(message: Message, services, deliveries) -> list[Event]:
    # Read by people on the message page: "no route matched", never "0 deliveries via ...".
    count = len(deliveries)
    detail = (f"{count} deliver{'y' if count == 1 else 'ies'} via {', '.join(s.name for s in services)}"
              if count else "no route matched: nothing to relay" if not services
              else f"nothing to relay: no subscriber of {', '.join(s.name for s in services)} to send it to")
    rows = [audit.event(Event.Kind.DISTRIBUTED, message, detail=detail)]
    names = {service.pk: service.name for service in services}
    for delivery in deliveries:
        rows.append(audit.event(
            Event.Kind.QUEUED, message, delivery,
            # A webhook or chat delivery has no address of its own: name its service, never its id.
            detail=f"to {delivery.address or names.get(delivery.service_id, 'its service')} "
                   f"at {delivery.not_before:%Y-%m-%d %H:%M:%S%z}"))
    return rows


def _send_now(delivery_ids) -> None:
    """Send deliveries this task just queued, in this task (send's own claims: a copy of the task
    run later finds them taken). A failure is send's to record; the lease brings them back."""
    try:
        sending.send_batch(delivery_ids)
    except Exception:
        log.warning("send of %s, handed on by distribute, failed; the sweeper retries it", delivery_ids)


def _distribute_one(message: Message) -> tuple[str, list]:
    """One message in one transaction; returns the outcome and the ids of its due deliveries."""
    services = routing.matching_services(message)
    now = clock.now()
    with transaction.atomic():
        deliveries = queue_deliveries(message, services, now)
        moved = Message.objects.filter(pk=message.pk, status=Message.Status.STANDARDIZED,
                                       claimed_by=message.claimed_by).update(
            status=Message.Status.DISTRIBUTED, claimed_by="", claimed_until=None, attempts=0, updated_at=now)
        if not moved:  # our claim expired and another worker finished it: undo ours
            transaction.set_rollback(True)
            return "lost claim", []
        message.status = Message.Status.DISTRIBUTED
        audit.record_all(_audit_rows(message, services, deliveries))
        mine = []
        for delivery in deliveries:
            events.delivery_updated(delivery)
            if delivery.not_before <= now:
                mine.append(delivery.pk)
        events.message_updated(message)
    return "distributed", mine
