"""send: claim a due delivery, write the audit row, call the transport, record the outcome.

A delivery of a DIGEST subscription is claimed with the subscription's other due deliveries and
they go out as one combined message (pipeline/digest.py); everything below holds per delivery.

At least once, never lost: the SENDING row carries a lease (claimed_until); a worker that dies
mid-send leaves it to expire, and the sweeper hands the delivery to another worker. Webhook
targets de-duplicate by the delivery id (Idempotency-Key); the DB marks each delivery SENT once.
"""

import logging
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from time import monotonic

from django.conf import settings
from django.db import transaction

from mailgate import backoff, metrics
from outgoing import ratelimit, sending as outgoing_sending
from outgoing.models import Service
from outgoing.errors import TransportError, unexpected
from outgoing.transports.base import DEFAULT_TIMEOUT, timeout_of
from pipeline import audit, claims, clock, digest, events, queue
from pipeline.models import Delivery, Event, Message, Subscription
from pipeline.queue import Stage

log = logging.getLogger(__name__)

DISABLED_SERVICE_RECHECK = timedelta(minutes=5)


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Delay before the next attempt after attempt number `attempt` (1-based), never less than the
    service's Retry-After."""
    return backoff.equal_jitter(attempt - 1, base=settings.MAILGATE_RETRY_BASE_SECONDS,
                                cap=settings.MAILGATE_RETRY_MAX_SECONDS, at_least=retry_after or 0)


def _defer(delivery: Delivery, until, why: str, batch: "_Batch | None" = None, wake: bool = False) -> str:
    """Give the claim back without counting an attempt (rate limit, disabled service).

    `wake`: queue its send task now, to be taken at `until` (queue.enqueue_at), in the transaction
    that gives the claim back. Without it the sweeper queues it once due, at its next run (once a
    minute): a rate-limited service then sent only its bucket's 10 seconds' worth a minute, a
    sixth of its rate."""
    if batch is not None and delivery.pk in batch.announced:  # its timeline says "sending": say why not
        audit.record(Event.Kind.RETRY, delivery.message, delivery,
                     detail=f"not sent: {why}; next at {until:%Y-%m-%d %H:%M:%S%z}")
    attempts = max(0, delivery.attempts - 1)
    with transaction.atomic():
        queued = wake and queue.enqueue_at(Stage.SEND, [delivery.pk], until)
        # claimed_until on a waiting row: its task is queued until then, so the sweeper leaves it.
        held = until + timedelta(seconds=settings.MAILGATE_STAGE_DEADLINE) if queued else None
        if not claims.finish_delivery(delivery, status=Delivery.Status.RETRYING if attempts else Delivery.Status.SCHEDULED,
                                      attempts=attempts, not_before=until, claimed_until=held):
            transaction.set_rollback(True)  # our claim was lost: no task of ours for it either
    log.debug("delivery %s deferred to %s: %s", delivery.pk, until, why)
    return "deferred"


def _finish(delivery: Delivery, kind, detail: str, service_fields=None, batch: "_Batch | None" = None,
            **fields) -> bool:
    # With no service row to write, no transaction: on PostgreSQL the finish and its audit row are
    # one statement (claims.finish_delivery), which commits on its own.
    with transaction.atomic() if service_fields else nullcontext():
        done = claims.finish_delivery(delivery, audit.event(kind, delivery.message, delivery, detail=detail), **fields)
        if done:
            if batch is not None and batch.hints_at_end:
                batch.finished.append(delivery)
            else:
                events.delivery_updated(delivery)
        else:
            # Our lease expired and another worker took the delivery over; it records the outcome.
            audit.record(Event.Kind.CRASHED, delivery.message, delivery,
                         detail=f"claim lost before recording: {detail}"[:2000])
        if service_fields:
            # Whether or not our claim still holds, the send happened. Last, so the service's row
            # (shared by every worker sending through it) stays locked as briefly as possible.
            Service.objects.filter(pk=delivery.service_id).update(**service_fields)
    if done:  # counted once committed
        metrics.delivery_finished(delivery.service.kind, kind)
    return done


class _Batch:
    """What a send task's deliveries share: each service's last success, written once at the end
    (a row every worker sending through the service writes, so also locked once instead of with
    every send), and, in a batch of several, the live hints: one per audience at the end instead of
    a delivery.updated event (one sequence-number UPDATE) per delivery."""

    def __init__(self, hints_at_end: bool):
        self.hints_at_end = hints_at_end
        self.successes: dict = {}  # service id → time of its last success
        self.finished: list[Delivery] = []
        self.announced: set = set()  # deliveries whose SENDING row is written (announce)
        self.stale: set = set()  # services whose row changed since the batch's claim read it
        self.held: dict = {}  # service id → deliveries of this batch its rate limit held back

    def slot(self, service, wait: float) -> float:
        """Seconds the next delivery `service`'s rate limit holds back waits: the first `wait`, each
        one after it a token later, so that they come due one by one and not all at once (each but
        the first would find no token and be held back again)."""
        held = self.held.get(service.pk, 0)
        self.held[service.pk] = held + 1
        return wait + (held * 60 / service.rate_per_minute if service.rate_per_minute else 0)

    def announce(self, deliveries) -> None:
        """The SENDING rows of the batch's claimed deliveries that go straight out, in one INSERT
        before the first send (one INSERT per send otherwise): those of an enabled service with
        no rate limit of its own and no Retry-After block, the only checks _send_group makes
        before it sends. Should one of them be held back after all (a Retry-After that another
        delivery of the batch met), _defer records why on its timeline."""
        now = clock.now()
        ready = [d for d in deliveries if d.service.enabled and not d.service.rate_per_minute
                 and not (d.service.blocked_until and d.service.blocked_until > now)]
        audit.record_all([audit.event(Event.Kind.SENDING, d.message, d, detail=_sending_detail(d, d.service))
                          for d in ready])
        self.announced.update(d.pk for d in ready)

    def close(self) -> None:
        for service_id, at in self.successes.items():
            Service.objects.filter(pk=service_id).update(last_success_at=at)
        if self.finished:  # a message page refreshes its deliveries on its id among the hint's
            events.messages_changed(list({d.message_id: d.message for d in self.finished}.values()),
                                    "message.updated")


def send(delivery_id, batch: _Batch | None = None) -> str:
    """Stage task body for one delivery; returns what happened (for logs and tests). `batch`: the
    send task's shared state when it is one of a batch (see send_batch)."""
    delivery = claims.claim_delivery(delivery_id)
    if delivery is not None:
        group = [delivery]
    elif claims.is_digest(delivery_id):  # only asked when the plain claim failed: no cost per send
        group = claims.claim_digest(delivery_id, digest.LIMIT)
    else:
        group = []
    if not group:
        return "skipped"
    return _send_group(group, batch)


def send_batch(delivery_ids) -> str:
    """Stage task body for a batch of deliveries (one task per MAILGATE_SEND_BATCH due ones).

    The deliveries that never started are claimed together (claims.claim_fresh_deliveries), the
    rest one by one as send() does. Each is then sent on its own: one that raises does not stop
    the others (its lease expires and the sweeper retries it alone), unless it lost the database,
    and the first error is re-raised at the end, after the services' last success and the live
    hints are written. A send that could end past MAILGATE_SEND_BATCH_SECONDS is not started:
    it and the rest go back on the queue (_put_back)."""
    ids = [str(pk) for pk in delivery_ids]
    outcomes = []
    started = monotonic()
    batch = _Batch(hints_at_end=len(ids) > 1)
    fresh = claims.claim_fresh_deliveries(ids) if len(ids) > 1 else {}
    batch.announce(fresh.values())
    with claims.EachAlone(_logged) as each:
        for position, delivery_id in enumerate(ids):
            if each.database_lost:
                # The database went away mid-batch (a restart; on SQLite, a lock held past the busy
                # timeout): a webhook sent now could not be recorded SENT and would go out again
                # after its lease. The rest keep their claims and come back through the sweeper,
                # so a restart repeats at most the one send in flight per worker
                # (tests/test_faults.py), not the rest of its batch.
                break
            if position and _past_budget(started, fresh.get(delivery_id)):
                outcomes += ["put back"] * _put_back(ids[position:], fresh, batch)
                break
            delivery = fresh.get(delivery_id)
            work = (_send_group, [delivery], batch) if delivery is not None else (send, delivery_id, batch)
            if (outcome := each(delivery_id, *work)) is not None:
                outcomes.append(outcome)
        batch.close()
    if len(outcomes) == 1:
        return outcomes[0]
    return ", ".join(f"{name} {outcomes.count(name)}" for name in sorted(set(outcomes)))


def _past_budget(started: float, delivery: Delivery | None) -> bool:
    """Whether a send started now could end past the batch's MAILGATE_SEND_BATCH_SECONDS, its
    service answering at the last moment of its timeout (a delivery not claimed yet: the default
    timeout). A batch of slow targets would otherwise run into the task timeout, which kills the
    worker mid-send: that send goes out again, and the batch's other claims wait out their lease."""
    timeout = timeout_of(delivery.service.config) if delivery is not None else DEFAULT_TIMEOUT
    return monotonic() - started + timeout > settings.MAILGATE_SEND_BATCH_SECONDS


def _put_back(delivery_ids: list[str], fresh: dict[str, Delivery], batch: _Batch) -> int:
    """A send batch's deliveries it had no time left for, back on the queue in a new send task, in
    one transaction with giving back the claims this task took on them (due again, the attempt not
    counted); a delivery whose SENDING row the batch wrote gets a row saying it was not sent.
    Returns how many went back."""
    now = clock.now()
    claimed = [fresh[pk] for pk in delivery_ids if pk in fresh]
    with transaction.atomic():
        if claimed:
            # claimed_until, as the admin's requeue sets it: a task is queued, the sweeper waits.
            Delivery.objects.filter(pk__in=[d.pk for d in claimed], status=Delivery.Status.SENDING,
                                    claimed_by=claimed[0].claimed_by).update(
                status=Delivery.Status.SCHEDULED, attempts=0, claimed_by="", claimed_until=claims.db_lease(),
                not_before=now, updated_at=now)
        audit.record_all([audit.event(Event.Kind.RETRY, d.message, d,
                                      detail="not sent: its send task ran out of time; queued again")
                          for d in claimed if d.pk in batch.announced])
        queue.enqueue_on_commit(Stage.SEND, delivery_ids)
    log.info("a send batch had no time left (MAILGATE_SEND_BATCH_SECONDS %s) for %d deliveries: queued again",
             settings.MAILGATE_SEND_BATCH_SECONDS, len(delivery_ids))
    return len(delivery_ids)


@contextmanager
def _logged(delivery_id):
    """A send's error boundary in a batch: the delivery's lease brings it back to the sweeper."""
    try:
        yield
    except Exception:
        log.exception("send failed for delivery %s", delivery_id)
        raise


def _each(group: list[Delivery], record) -> str:
    """Record one outcome on every delivery of the group; the first one's is the task's result."""
    return [record(delivery) for delivery in group][0]


def _send_group(group: list[Delivery], batch: _Batch | None = None) -> str:
    """Send one message - the delivery's own, or for a digest one made of the whole group's - and
    record the outcome on every delivery of the group. Returns the first delivery's outcome."""
    now = clock.now()
    for delivery in [d for d in group if d.attempts > settings.MAILGATE_DELIVERY_MAX_ATTEMPTS]:
        _finish(delivery, Event.Kind.DEAD, f"gave up after {delivery.attempts - 1} attempts",
                status=Delivery.Status.DEAD)
    group = [d for d in group if d.attempts <= settings.MAILGATE_DELIVERY_MAX_ATTEMPTS]
    if not group:
        return "dead"
    first, service = group[0], group[0].service
    if not service.enabled:
        return _each(group, lambda d: _defer(d, now + DISABLED_SERVICE_RECHECK, "service disabled", batch))
    # The claim just read the service; in a batch, unless its row changed since (a token spent, a
    # failure that may have set a Retry-After block).
    wait = ratelimit.take_token(service, now, fresh=batch is None or service.pk not in batch.stale)
    if batch is not None and service.rate_per_minute:
        batch.stale.add(service.pk)
    if wait > 0:
        until = now + timedelta(seconds=batch.slot(service, wait) if batch is not None else wait)
        return _each(group, lambda d: _defer(d, until, "rate limit", batch, wake=True))

    is_digest = first.subscription.mode == Subscription.Mode.DIGEST
    message = digest.compose(group) if is_digest else first.message
    grouped = f", in a digest of {len(group)}" if is_digest else ""
    # The audit rows are committed before the side effect: if the worker dies inside send(), the
    # timeline shows a send that may or may not have happened. (A batch wrote them at its start.)
    for delivery in group:
        if batch is None or delivery.pk not in batch.announced:
            audit.record(Event.Kind.SENDING, delivery.message, delivery,
                         detail=_sending_detail(delivery, service, grouped))
    try:
        # Records the service's last error and any Retry-After block itself.
        remote_id = outgoing_sending.send(first, message=message, service=service, record_success=False)
    except TransportError as exc:
        error = exc
    except Exception as exc:  # a bug or an unexpected library error: retry, it may be transient
        log.exception("transport %s raised for delivery %s", service.kind, first.pk)
        # Shown to the service's owner and the account's members: the type and a redacted message,
        # never repr(), which can quote a URL with the service's token in it.
        error = unexpected(exc)
        outgoing_sending.record_failure(service, error)
    else:
        now = clock.now()
        if batch is not None:
            batch.successes[service.pk] = now
        for i, delivery in enumerate(group):
            _finish(delivery, Event.Kind.SENT, (f"remote id {remote_id}" if remote_id else "sent") + grouped,
                    service_fields={"last_success_at": now} if i == 0 and batch is None else None, batch=batch,
                    status=Delivery.Status.SENT, remote_id=str(remote_id or "")[:500], sent_at=now, last_error="")
        return "sent"
    if batch is not None:  # its last error, perhaps a Retry-After block: the next send reads it
        batch.stale.add(service.pk)
    delay = backoff_seconds(first.attempts, error.retry_after)
    return _each(group, lambda d: _failed(d, service, error, recorded_on_service=True, delay=delay))


def _sending_detail(delivery: Delivery, service, grouped: str = "") -> str:
    return f"attempt {delivery.attempts} via {service.kind} to {delivery.address or service.name}{grouped}"


def _failed(delivery: Delivery, service, exc: TransportError, recorded_on_service: bool = False,
            delay: float | None = None) -> str:
    """Record a failed attempt on the delivery (and on the service unless outgoing.sending did).
    `delay`: the backoff to use instead of this delivery's own (a digest group keeps one, so its
    deliveries come due together again and are not split into several digests).

    delivery.remote_id is left alone: it holds the parts of a multi-part send already delivered,
    which the next attempt must not send again."""
    now = clock.now()
    text = (exc.message or exc.__class__.__name__)[:5000]
    if not recorded_on_service:
        outgoing_sending.record_failure(service, exc, now=now)
    if exc.permanent:
        _finish(delivery, Event.Kind.FAILED, text, status=Delivery.Status.FAILED, last_error=text)
        return "failed"
    if delivery.attempts >= settings.MAILGATE_DELIVERY_MAX_ATTEMPTS:
        _finish(delivery, Event.Kind.DEAD, f"attempt {delivery.attempts}: {text}",
                status=Delivery.Status.DEAD, last_error=text)
        return "dead"
    if delay is None:
        delay = backoff_seconds(delivery.attempts, exc.retry_after)
    _finish(delivery, Event.Kind.RETRY, f"attempt {delivery.attempts}: {text}; next in {delay:.0f}s",
            status=Delivery.Status.RETRYING, last_error=text, not_before=now + timedelta(seconds=delay))
    return "retrying"


# Admin actions ---------------------------------------------------------------------------------

def _reschedule(queryset, from_statuses, kind, detail, reset_attempts: bool) -> int:
    """Make deliveries due now and enqueue them; returns how many moved."""
    now = clock.now()
    moved = 0
    for delivery in queryset.filter(status__in=from_statuses).select_related("message"):
        fields = dict(status=Delivery.Status.RETRYING if delivery.attempts and not reset_attempts
                      else Delivery.Status.SCHEDULED,
                      not_before=now, claimed_by="", claimed_until=claims.lease(now), updated_at=now)
        if reset_attempts:
            fields["attempts"] = 0
        with transaction.atomic():
            if Delivery.objects.filter(pk=delivery.pk, status=delivery.status).update(**fields):
                moved += 1
                delivery.status = fields["status"]
                audit.record(kind, delivery.message, delivery, detail=detail)
                events.delivery_updated(delivery)
                queue.enqueue_on_commit(Stage.SEND, [delivery.pk])
    return moved


def retry_deliveries(queryset) -> int:
    """FAILED/DEAD → send again now, with a fresh attempt count."""
    return _reschedule(queryset, [Delivery.Status.FAILED, Delivery.Status.DEAD], Event.Kind.REQUEUED,
                       "retried by an admin", reset_attempts=True)


def requeue_deliveries(queryset) -> int:
    """Waiting (window, backoff, rate limit) or cancelled → due now."""
    return _reschedule(queryset, [Delivery.Status.SCHEDULED, Delivery.Status.RETRYING, Delivery.Status.CANCELLED],
                       Event.Kind.REQUEUED, "requeued by an admin", reset_attempts=False)


def cancel_deliveries(queryset) -> int:
    cancelled = 0
    for delivery in queryset.exclude(status__in=[Delivery.Status.SENT, Delivery.Status.SENDING,
                                                 Delivery.Status.CANCELLED]).select_related("message"):
        with transaction.atomic():
            if Delivery.objects.filter(pk=delivery.pk, status=delivery.status).update(
                    status=Delivery.Status.CANCELLED, claimed_until=None, updated_at=clock.now()):
                cancelled += 1
                delivery.status = Delivery.Status.CANCELLED
                audit.record(Event.Kind.CANCELLED, delivery.message, delivery, detail="cancelled by an admin")
                events.delivery_updated(delivery)
    return cancelled


def retry_messages(queryset) -> int:
    """DEAD messages → RECEIVED with a fresh attempt count (standardize is idempotent)."""
    moved = 0
    for message in queryset.filter(status=Message.Status.DEAD):
        with transaction.atomic():
            if Message.objects.filter(pk=message.pk, status=Message.Status.DEAD).update(
                    status=Message.Status.RECEIVED, attempts=0, claimed_by="", claimed_until=None,
                    updated_at=clock.now()):
                moved += 1
                message.status = Message.Status.RECEIVED
                audit.record(Event.Kind.REQUEUED, message, detail="retried by an admin")
                events.message_updated(message)
                queue.enqueue_on_commit(Stage.STANDARDIZE, [message.pk])
    return moved
