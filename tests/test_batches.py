"""Batched stages in process (docs/pipeline.md "Batches"): a batch does what one message at a time
does, in fewer queries; its first message goes on at once; one message's failure stays its own;
a batch run twice duplicates nothing."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from pipeline import distribute, routing, sending, tasks
from pipeline.models import Delivery, Event, Message
from tests.builders import eml, ingest, route_everything, smtp_service, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def relay(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    for name in ("bob", "carol"):
        subscribe(service, name, f"{name}@example.test")
    return service


def standardized(owner, count: int) -> list[str]:
    ids = [str(ingest(owner, eml(subject=f"Batch {n}")).pk) for n in range(count)]
    for pk in ids:
        tasks.standardize(pk)
    return ids


def test_a_batch_is_distributed_as_one_message_at_a_time_would_be_and_a_rerun_adds_nothing(
        alice, relay, django_capture_on_commit_callbacks):
    ids = standardized(alice, 6)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.distribute(ids) == "distributed 6 of 6"
    assert Message.objects.filter(pk__in=ids, status=Message.Status.DISTRIBUTED).count() == 6
    assert Delivery.objects.filter(message_id__in=ids).count() == 12
    for pk in ids:
        assert list(Event.objects.filter(message_id=pk, kind__in=["distributed", "queued"])
                    .values_list("kind", flat=True)) == ["distributed", "queued", "queued"]
    # The first went on at once: its two deliveries were sent in this task, the others are queued.
    assert Delivery.objects.filter(message_id=ids[0], status=Delivery.Status.SENT).count() == 2
    assert not Delivery.objects.filter(message_id__in=ids[1:]).exclude(status=Delivery.Status.SCHEDULED).exists()

    assert tasks.distribute(ids) == "distributed 0 of 6"  # run twice: nothing claimed, nothing added
    assert Delivery.objects.filter(message_id__in=ids).count() == 12


def queued(stage: str) -> list[str]:
    tasks_queued = [SignedPackage.loads(payload) for payload in OrmQ.objects.values_list("payload", flat=True)]
    return [task["name"] for task in tasks_queued if task["func"] == f"pipeline.tasks.{stage}"]


def test_a_message_alone_is_standardized_distributed_and_sent_in_one_task_and_a_rerun_adds_nothing(
        alice, relay, settings, django_capture_on_commit_callbacks, clean_smtp_sink):
    # A push is a message alone: two queue hops fewer between the push and its relay (issue #19).
    settings.MAILGATE_HAND_ON_ALONE = True
    pk = str(ingest(alice, eml(subject="Pushed")).pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.standardize(pk) == "standardized"
    assert Message.objects.get(pk=pk).status == Message.Status.DISTRIBUTED
    assert Delivery.objects.filter(message_id=pk, status=Delivery.Status.SENT).count() == 2
    assert len(clean_smtp_sink.messages) == 2
    assert queued("distribute") == queued("send") == []  # nothing of its relay left for the queue
    with django_capture_on_commit_callbacks(execute=True):  # the task again, or a stray copy
        assert tasks.standardize(pk) == "skipped"
        assert tasks.distribute(pk) == "skipped"
    assert Delivery.objects.filter(message_id=pk).count() == 2 and len(clean_smtp_sink.messages) == 2


def test_without_the_hand_on_a_message_alone_goes_on_through_the_queue(
        alice, relay, django_capture_on_commit_callbacks):
    pk = str(ingest(alice, eml(subject="Queued")).pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.standardize(pk) == "standardized"
    assert Message.objects.get(pk=pk).status == Message.Status.STANDARDIZED
    assert queued("distribute") == [f"distribute:{pk}"]


def test_a_message_whose_routing_fails_in_a_batch_fails_alone(alice, relay, monkeypatch):
    ids = standardized(alice, 4)
    poison = Message.objects.get(pk=ids[2])
    real = routing.matching_services

    def matching(message, links=None):
        if str(message.pk) == str(poison.pk):
            raise RuntimeError("routing exploded")
        return real(message, links)

    monkeypatch.setattr(routing, "matching_services", matching)
    with pytest.raises(RuntimeError, match="routing exploded"):
        tasks.distribute(ids)
    assert Message.objects.filter(pk__in=ids, status=Message.Status.DISTRIBUTED).count() == 3
    poison.refresh_from_db()
    assert poison.status == Message.Status.STANDARDIZED and poison.claimed_until is not None  # the sweeper's
    assert Event.objects.filter(message=poison, kind="crashed").exists()
    assert not Delivery.objects.filter(message=poison).exists()


def test_a_batch_whose_write_fails_is_redone_one_message_at_a_time(alice, relay, monkeypatch):
    ids = standardized(alice, 4)

    def broken(plans, now):
        raise RuntimeError("the batch's transaction failed")

    monkeypatch.setattr(distribute, "_write_together", broken)
    assert tasks.distribute(ids) == "distributed 4 of 4"
    assert Delivery.objects.filter(message_id__in=ids).count() == 8


def test_a_batch_costs_few_queries_per_message(alice, relay):
    ids = standardized(alice, 20)
    with CaptureQueriesContext(connection) as one:
        tasks.distribute(ids[0])
    with CaptureQueriesContext(connection) as batch:
        tasks.distribute(ids[1:])
    per_message = len(batch) / 19
    assert per_message < 3 and per_message < len(one) / 4, (len(one), per_message)


def test_a_delivery_that_raises_in_a_send_batch_fails_alone(alice, relay, monkeypatch, clean_smtp_sink):
    ids = standardized(alice, 3)
    tasks.distribute(ids)
    deliveries = [str(pk) for pk in Delivery.objects.filter(message_id__in=ids).order_by("pk").values_list("pk", flat=True)]
    poison = deliveries[1]
    real = sending.claims.claim_delivery

    def claim(delivery_id):
        if str(delivery_id) == poison:
            raise RuntimeError("claim exploded")
        return real(delivery_id)

    monkeypatch.setattr(sending.claims, "claim_delivery", claim)
    with pytest.raises(RuntimeError, match="claim exploded"):
        tasks.send(deliveries)
    sent = set(str(pk) for pk in Delivery.objects.filter(status=Delivery.Status.SENT).values_list("pk", flat=True))
    assert sent == set(deliveries) - {poison}
    assert len(clean_smtp_sink.messages) == len(deliveries) - 1
    relay.refresh_from_db()
    assert relay.last_success_at is not None  # written once, at the batch's end
