"""Compare-and-set claims: a conditional UPDATE decides which worker runs a stage for a row.

The attempt count is bumped in the same UPDATE and committed before the stage does any work, so a
row whose processing kills the worker (django-q2 does not count a SIGKILLed worker as a failed
attempt) still runs out of attempts and ends DEAD instead of looping.
"""

import logging
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from mailgate.bulk_update import update_each, update_then_insert
from pipeline import audit, clock, events, queue
from pipeline.models import Delivery, Event, Message, Subscription

log = logging.getLogger(__name__)


def lease(now):
    return now + timedelta(seconds=settings.MAILGATE_STAGE_DEADLINE)


# A claim's lease is set and judged by the database's clock, not the worker's: a worker whose
# clock ran an hour ahead took over every live lease as "expired" and sent those deliveries a
# second time (tests/test_faults.py). Due times (windows, backoff) still follow clock.now().
def db_lease():
    return ExpressionWrapper(Now() + timedelta(seconds=settings.MAILGATE_STAGE_DEADLINE),
                             output_field=DateTimeField())


def lease_expired():
    return Q(claimed_until__lt=Now())


def claim_message(message_id, status: str) -> Message | None:
    """Claim a message waiting in `status` for this worker; None if another worker holds it, it
    moved on, or it just ran out of attempts (then it is DEAD)."""
    now = clock.now()
    me = audit.worker_name()
    # One UPDATE is atomic and, outside a transaction, committed on its own: no BEGIN/COMMIT needed.
    claimed = (Message.objects.filter(pk=message_id, status=status)
               .filter(Q(claimed_until__isnull=True) | lease_expired())
               .update(claimed_by=me, claimed_until=db_lease(), attempts=F("attempts") + 1, updated_at=now))
    if not claimed:
        return None
    message = Message.objects.select_related("owner").get(pk=message_id)
    if message.attempts > settings.MAILGATE_PIPELINE_MAX_ATTEMPTS:
        give_up_message(message, status, f"gave up at {status} after {message.attempts - 1} attempts")
        return None
    if message.attempts > 1:
        audit.record(Event.Kind.CRASHED, message, detail=f"{status}: attempt {message.attempts} "
                                                         f"(an earlier attempt did not finish)")
    return message


def claim_messages(message_ids, status: str, companions: bool = True) -> list[Message]:
    """Claim the messages of a batch that wait in `status`, with ONE conditional UPDATE (attempts
    bumped and committed before any work, as claim_message); returns those this worker now holds.

    A message that already started once (attempts > 1 after the claim) may be the one that killed
    its batch's worker: in a batch of several it is handed back (attempt count as before) and queued
    in a task of its own, so a message that crashes its worker every time ends DEAD alone and its
    batch-mates go on. A message alone behaves exactly as claim_message. `companions=False`: the
    messages given and no others (a message handed on at once by the stage before)."""
    ids = [str(pk) for pk in message_ids]
    if len(ids) == 1:
        message = claim_message(ids[0], status)
        messages = [message] if message is not None else []
    else:
        messages = _claim_several(ids, status)
    if companions and settings.MAILGATE_STAGE_COMPANIONS and all(m.attempts == 1 for m in messages):
        messages += _claim_companions(status, settings.MAILGATE_STAGE_BATCH - len(messages))
    return messages


def _claim_companions(status: str, limit: int) -> list[Message]:
    """Fill a batch with other messages of this lane waiting in `status` that never started
    (attempts 0, no claim): a backlog queued one task per message (imports, a burst of webhooks)
    is processed in batches, and the tasks queued for the companions find them taken and return.
    Only with MAILGATE_STAGE_COMPANIONS (on in workers; tests call stages one message at a time)."""
    if limit <= 0:
        return []
    now = clock.now()
    me, until = audit.worker_name(), lease(now)
    fresh = Message.objects.filter(status=status, attempts=0, claimed_until__isnull=True)
    # Read first, outside any write: most tasks of a backlog queued one per message find their
    # message and every companion already taken, and an UPDATE with this as its subquery held
    # SQLite's one write lock for the scan each time (~40 % of the bulk lane's lock time in
    # bench/pipeline.py --backlog).
    picked = list(fresh.filter(queue.in_lane(queue.current_lane())).order_by("updated_at")
                  .values_list("pk", flat=True)[:limit])
    # The conditions again on the UPDATE itself: the compare-and-set between workers.
    if not picked or not fresh.filter(pk__in=picked).update(claimed_by=me, claimed_until=until,
                                                            attempts=F("attempts") + 1, updated_at=now):
        return []
    return list(Message.objects.select_related("owner").filter(
        status=status, claimed_by=me, claimed_until=until).order_by("received_at", "pk"))


def _claim_several(ids: list[str], status: str) -> list[Message]:
    now = clock.now()
    me, until = audit.worker_name(), lease(now)
    claimed = (Message.objects.filter(pk__in=ids, status=status)
               .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
               .update(claimed_by=me, claimed_until=until, attempts=F("attempts") + 1, updated_at=now))
    if not claimed:
        return []
    messages = list(Message.objects.select_related("owner").filter(
        pk__in=ids, status=status, claimed_by=me, claimed_until=until).order_by("received_at", "pk"))
    suspects = [m for m in messages if m.attempts > 1]
    if suspects:
        back = [m.pk for m in suspects]
        Message.objects.filter(pk__in=back, claimed_by=me, claimed_until=until).update(
            claimed_by="", claimed_until=None, attempts=F("attempts") - 1)
        log.warning("%s: %d message(s) of a batch had started before; each runs alone", status, len(back))
        stage = {Message.Status.RECEIVED: "standardize", Message.Status.STANDARDIZED: "distribute"}[status]
        for pk in back:
            queue.enqueue(stage, pk)
        messages = [m for m in messages if m.attempts <= 1]
    return messages


def give_up_message(message: Message, status: str, reason: str) -> bool:
    with transaction.atomic():
        done = Message.objects.filter(pk=message.pk, status=status).update(
            status=Message.Status.DEAD, claimed_by="", claimed_until=None, updated_at=clock.now())
        if done:
            message.status = Message.Status.DEAD
            audit.record(Event.Kind.DEAD, message, detail=reason)
            events.message_updated(message)
    return bool(done)


def release_message(message: Message, status: str, reason: str) -> None:
    """A stage failed with an exception: record it and let the sweeper try again after the deadline
    (the claim stays until then, so a burst of retries cannot spin)."""
    audit.record(Event.Kind.CRASHED, message, detail=f"{status}: {reason}"[:2000])


@contextmanager
def crash_boundary(message: Message, status: str, stage: str):
    """A message stage's one error boundary: whatever the stage raises is logged with the message
    id, recorded on its timeline (release_message) and re-raised, so django-q counts a failed task
    and the sweeper retries the row after the claim's deadline."""
    try:
        yield
    except Exception as exc:
        log.exception("%s failed for message %s", stage, message.pk)
        release_message(message, status, repr(exc))
        raise


class EachAlone:
    """A batch's items, each on its own: what one raises is logged and recorded by `boundary(item)`
    (a context manager), kept, and does not stop the others; when the `with` block ends, after the
    batch's closing work (its writes, its enqueues), the first failure is re-raised, so django-q
    counts the task failed while the row waits for the sweeper alone.

        with claims.each_message(Message.Status.STANDARDIZED, "distribute") as each:
            for message in messages:
                result = each(message, work, message)  # None when it raised
    """

    def __init__(self, boundary):
        self.boundary = boundary
        self.failures: list[Exception] = []

    def __call__(self, item, work, *args):
        try:
            with self.boundary(item):
                return work(*args)
        except Exception as exc:
            self.failures.append(exc)
            return None

    @property
    def database_lost(self) -> bool:
        """An item failed because the connection to the database did (a restart, a network
        fault): every later item would meet the same error, after doing what cannot be undone."""
        return any(isinstance(exc, (OperationalError, InterfaceError)) for exc in self.failures)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None and self.failures:
            raise self.failures[0]
        return False


def each_message(status: str, stage: str) -> EachAlone:
    """EachAlone for a message stage: each message inside its crash_boundary."""
    return EachAlone(lambda message: crash_boundary(message, status, stage))


def _for_sending():
    """Deliveries with everything a send reads, in one query: the message with its source
    (formatting names it), the service and the subscription."""
    return Delivery.objects.select_related("message__account", "message__channel", "service", "subscription")


def claim_delivery(delivery_id) -> Delivery | None:
    """SCHEDULED/RETRYING and due (or SENDING with an expired lease) → SENDING for this worker.
    Never a delivery of a DIGEST subscription: those go in groups (claim_digest)."""
    now = clock.now()
    me = audit.worker_name()
    due = Q(status__in=[Delivery.Status.SCHEDULED, Delivery.Status.RETRYING], not_before__lte=now)
    abandoned = Q(status=Delivery.Status.SENDING) & lease_expired()
    # Claim and status change in one UPDATE, committed on its own (autocommit) before the send.
    claimed = Delivery.objects.filter(Q(pk=delivery_id) & (due | abandoned)).exclude(
        subscription__mode=Subscription.Mode.DIGEST).update(
        status=Delivery.Status.SENDING, claimed_by=me, claimed_until=db_lease(),
        attempts=F("attempts") + 1, updated_at=now)
    if not claimed:
        return None
    return _for_sending().get(pk=delivery_id)


def claim_fresh_deliveries(delivery_ids) -> dict[str, Delivery]:
    """A send batch's deliveries that never started (attempts 0), due and not of a DIGEST
    subscription: claimed with ONE conditional UPDATE, read with one query and their messages'
    attachments with one more; returns them by id. Claiming each just before its send cost ~5 ms
    a delivery, most of a send (bench/pipeline.py --profile).

    The rest of the batch is left to claim_delivery / claim_digest, one by one: a retry, a digest's
    delivery, and above all one the sweeper brought back after its worker died, which may be the
    delivery that killed it. So a delivery that crashes its worker every time runs alone from its
    second attempt on and ends DEAD alone; the batch-mates its crash interrupted were charged that
    one attempt and run alone too, once their lease expires (pipeline/sweeper.py)."""
    ids = [str(pk) for pk in delivery_ids]
    now = clock.now()
    me = audit.worker_name()
    # `now` (to the microsecond, one task at a time per worker) tells this claim's rows from any
    # other SENDING row this worker may still hold from an earlier task.
    if not Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SCHEDULED, attempts=0,
                                   not_before__lte=now).exclude(subscription__mode=Subscription.Mode.DIGEST).update(
            status=Delivery.Status.SENDING, claimed_by=me, claimed_until=db_lease(), attempts=1, updated_at=now):
        return {}
    claimed = (_for_sending()
               .prefetch_related("message__attachments")
               .filter(pk__in=ids, status=Delivery.Status.SENDING, claimed_by=me, updated_at=now))
    return {str(delivery.pk): delivery for delivery in claimed}


def is_digest(delivery_id) -> bool:
    return Delivery.objects.filter(pk=delivery_id, subscription__mode=Subscription.Mode.DIGEST).exists()


def claim_digest(delivery_id, limit: int) -> list[Delivery]:
    """For a delivery of a DIGEST subscription: claim it and, with it, every other due delivery of
    the same subscription (up to `limit`), oldest first, as one group for one combined send.

    The whole claim runs under a lock on the subscription row (SQLite's IMMEDIATE transactions
    lock the database anyway), so the send tasks of one digest, which the sweeper enqueues all
    at once, never split it between workers: the first takes the group, the others find their
    delivery already claimed and skip. Returns [] when `delivery_id` itself is not claimable."""
    now = clock.now()
    me = audit.worker_name()
    due = Q(status__in=[Delivery.Status.SCHEDULED, Delivery.Status.RETRYING], not_before__lte=now)
    abandoned = Q(status=Delivery.Status.SENDING) & lease_expired()
    with transaction.atomic():
        subscription_id = (Delivery.objects.filter(Q(pk=delivery_id) & (due | abandoned))
                           .values_list("subscription_id", flat=True).first())
        if subscription_id is None:
            return []
        list(Subscription.objects.select_for_update().filter(pk=subscription_id).values_list("pk"))
        others = list(Delivery.objects.filter(subscription_id=subscription_id).filter(due | abandoned)
                      .exclude(pk=delivery_id).order_by("created_at", "pk").values_list("pk", flat=True)[:limit - 1])
        group = [delivery_id, *others]
        Delivery.objects.filter(pk__in=group).filter(due | abandoned).update(
            status=Delivery.Status.SENDING, claimed_by=me, claimed_until=db_lease(),
            attempts=F("attempts") + 1, updated_at=now)
    return list(_for_sending()
                .filter(pk__in=group, status=Delivery.Status.SENDING, claimed_by=me)
                .order_by("created_at", "pk"))


def finish_delivery(delivery: Delivery, record: Event | None = None, **fields) -> bool:
    """Move a delivery this worker holds out of SENDING, and write `record` (its audit row) if it
    did, atomically; False if the claim was lost meanwhile (then nothing is written)."""
    fields.setdefault("claimed_until", None)
    fields.setdefault("claimed_by", "")
    fields["updated_at"] = clock.now()
    # A prepared statement (mailgate/bulk_update.py): the ORM built this UPDATE for ~1 ms per send,
    # inside the transaction that holds SQLite's one write lock.
    names = list(fields)
    row = [fields[name] for name in names] + [delivery.pk, Delivery.Status.SENDING, delivery.claimed_by]
    if record is None:
        done = update_each(Delivery, names, ["id", "status", "claimed_by"], [row])
    else:  # on PostgreSQL one statement, no BEGIN/COMMIT (update_then_insert)
        done = update_then_insert(Delivery, names, ["id", "status", "claimed_by"], row, audit.inserter(),
                                  audit.values(record))
    if done:
        for name, value in fields.items():
            setattr(delivery, name, value)
    return bool(done)
