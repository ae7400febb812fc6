"""Batched stages in process (docs/pipeline.md "Batches"): a batch does what one message at a time
does, in fewer queries; its first message goes on at once; one message's failure stays its own;
a batch run twice duplicates nothing."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from pipeline import distribute, routing, sending, standardize, tasks
from outgoing.models import Service
from pipeline.models import Delivery, Event, Message, Thread
from tests.builders import (eml, ingest, make_service, queued_tasks, route_everything, smtp_service, statements,
                            subscribe, task_ids)

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
    return [task["name"] for task in queued_tasks(stage)]


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


def test_standardizing_a_batch_costs_few_queries_per_message(alice, relay, settings):
    # Issue #14: each message's thread lookup, thread INSERT and row UPDATE are the batch's, once.
    settings.MAILGATE_STAGE_WRITE_BATCH = 10
    ids = [str(ingest(alice, eml(subject=f"Distinct {n}", message_id=f"<distinct-{n}@example.test>")).pk)
           for n in range(21)]
    with CaptureQueriesContext(connection) as batch:
        assert tasks.standardize(ids) == "standardized 21"
    per_message = len(statements(batch)) / 21
    assert per_message <= 1.5, (per_message, statements(batch))
    assert Thread.objects.filter(owner=alice, message_count=1).count() == 21


# One conversation and its strays, in the order they arrive; (raw, name). Same Date on all of them.
CONVERSATION = [
    ("filler", dict(subject="Unrelated", sender="yan@example.test", message_id="<filler@example.test>")),
    ("lunch", dict(subject="Lunch?", sender="bob@example.test", to="alice@example.test",
                   message_id="<lunch@example.test>")),
    ("reply", dict(subject="Totally different", sender="carol@example.test", message_id="<reply@example.test>",
                   in_reply_to="<lunch@example.test>")),
    ("same subject", dict(subject="Re: lunch?", sender="alice@example.test", to="bob@example.test",
                          message_id="<again@example.test>")),
    ("stranger", dict(subject="Lunch?", sender="zed@example.test", to="yan@example.test",
                      message_id="<stranger@example.test>")),
    ("answer first", dict(subject="An answer", sender="dan@example.test", message_id="<answer@example.test>",
                          in_reply_to="<question@example.test>")),
    ("question", dict(subject="A question", sender="eve@example.test", message_id="<question@example.test>")),
    ("no subject", dict(subject="", sender="fay@example.test", message_id="<blank@example.test>")),
    ("names it", dict(subject="Now it has one", sender="gus@example.test", message_id="<named@example.test>",
                      in_reply_to="<blank@example.test>")),
    ("to the kickoff", dict(subject="Agenda", sender="hal@example.test", message_id="<agenda@example.test>",
                            in_reply_to="<kickoff@example.test>")),
    ("kickoff subject", dict(subject="Kickoff", sender="ivy@example.test", to="kim@example.test",
                             message_id="<kickoff-2@example.test>")),
    ("kickoff stranger", dict(subject="Kickoff", sender="ned@example.test", to="oz@example.test",
                              message_id="<kickoff-3@example.test>")),
]


def threaded(owner, batched: bool) -> dict:
    """CONVERSATION for `owner`, after a kickoff message standardized before it: each message's
    thread, told by the name of its thread's first message, with the thread's summary."""
    kickoff = ingest(owner, eml(subject="Kickoff", sender="kim@example.test", message_id="<kickoff@example.test>"))
    tasks.standardize(str(kickoff.pk))
    ids = {name: str(ingest(owner, eml(**fields)).pk) for name, fields in CONVERSATION}
    if batched:
        tasks.standardize(list(ids.values()))
    else:
        for pk in ids.values():
            tasks.standardize(pk)
    names = {str(kickoff.pk): "kickoff", **{pk: name for name, pk in ids.items()}}
    first: dict = {}
    result = {}
    for pk, name in names.items():
        thread = Message.objects.get(pk=pk).thread
        first.setdefault(thread.pk, name)
        result[name] = (first[thread.pk], thread.subject, thread.normalized_subject, thread.participants,
                        thread.message_count, thread.first_message_at, thread.last_message_at)
    assert Thread.objects.filter(owner=owner).count() == len(first)
    return result


def test_messages_of_one_batch_thread_with_each_other_as_one_at_a_time(alice, bob, settings):
    settings.MAILGATE_STAGE_WRITE_BATCH = 50  # all but the first (which goes on alone) in one write
    one_at_a_time, batch = threaded(alice, batched=False), threaded(bob, batched=True)
    assert batch == one_at_a_time
    thread_of = {name: row[0] for name, row in batch.items()}
    # A reply joins its parent of the same batch; same subject and a shared person join it too.
    assert thread_of["reply"] == thread_of["same subject"] == "lunch" and batch["lunch"][4] == 3
    assert thread_of["stranger"] == "stranger"
    # A reply before its parent cannot join it; an empty subject takes the first one that comes.
    assert thread_of["question"] == "question" != thread_of["answer first"]
    assert thread_of["names it"] == "no subject" and batch["names it"][1] == "Now it has one"
    # Threads from before the batch are joined, by reference and by subject and person.
    assert thread_of["to the kickoff"] == thread_of["kickoff subject"] == "kickoff" and batch["kickoff"][4] == 3
    assert thread_of["kickoff stranger"] == "kickoff stranger"


def test_a_message_whose_claim_was_lost_in_a_batch_is_left_to_the_other_worker(alice, settings, monkeypatch):
    ids = [str(ingest(alice, eml(subject=f"Claimed {n}")).pk) for n in range(4)]
    taken, finished = ids[1], ids[2]
    real = standardize._parse_one

    def parse_while_others_work(message, list_ids_of):
        # Our claim expired while we parsed: another worker holds one message and finished another.
        if str(message.pk) == taken:
            Message.objects.filter(pk=taken).update(claimed_by="other-worker")
        if str(message.pk) == finished:
            Message.objects.filter(pk=finished).update(status=Message.Status.STANDARDIZED, claimed_by="",
                                                       claimed_until=None)
        return real(message, list_ids_of)

    monkeypatch.setattr(standardize, "_parse_one", parse_while_others_work)
    assert tasks.standardize(ids) == "lost claim 2, standardized 2"
    assert Message.objects.get(pk=taken).claimed_by == "other-worker"
    assert not Event.objects.filter(message_id__in=[taken, finished], kind="standardized").exists()
    assert Event.objects.filter(message_id__in=[ids[0], ids[3]], kind="standardized").count() == 2


def test_a_delivery_that_raises_in_a_send_batch_fails_alone(alice, relay, monkeypatch, clean_smtp_sink):
    ids = standardized(alice, 3)
    tasks.distribute(ids)
    deliveries = [str(pk) for pk in Delivery.objects.filter(message_id__in=ids).order_by("pk").values_list("pk", flat=True)]
    poison = deliveries[1]
    real = sending._send_group

    def send_group(group, batch=None):
        if str(group[0].pk) == poison:
            raise RuntimeError("send exploded")
        return real(group, batch)

    monkeypatch.setattr(sending, "_send_group", send_group)
    with pytest.raises(RuntimeError, match="send exploded"):
        tasks.send(deliveries)
    sent = set(str(pk) for pk in Delivery.objects.filter(status=Delivery.Status.SENT).values_list("pk", flat=True))
    assert sent == set(deliveries) - {poison}
    assert len(clean_smtp_sink.messages) == len(deliveries) - 1
    relay.refresh_from_db()
    assert relay.last_success_at is not None  # written once, at the batch's end


def test_a_send_batch_that_loses_the_database_sends_no_more_and_loses_nothing(alice, relay, monkeypatch,
                                                                              clean_smtp_sink):
    # A PostgreSQL restart in mid-batch: the first send went out but its SENT could not be written.
    # Every later send of the batch would go out and fail to be recorded the same way, and so be
    # repeated at the receiver once its lease expired; the batch stops instead, and its deliveries
    # keep their claims until the sweeper brings them back.
    from django.db import OperationalError

    from pipeline.sweeper import sweep

    ids = standardized(alice, 3)
    tasks.distribute(ids)
    deliveries = [str(pk) for pk in Delivery.objects.filter(message_id__in=ids).order_by("pk").values_list("pk", flat=True)]
    real = sending._finish

    def finish_without_a_database(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(sending, "_finish", finish_without_a_database)
    with pytest.raises(OperationalError):
        tasks.send(deliveries)
    assert len(clean_smtp_sink.messages) == 1  # the one send in flight, not the whole batch
    held = Delivery.objects.filter(pk__in=deliveries)
    assert {d.status for d in held} == {Delivery.Status.SENDING} and all(d.claimed_by for d in held)

    monkeypatch.setattr(sending, "_finish", real)  # the database is back; the leases run out
    held.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sweep()["abandoned"] == len(deliveries)
    for pk in deliveries:
        tasks.send(pk)
    assert set(held.values_list("status", flat=True)) == {Delivery.Status.SENT}
    assert len(clean_smtp_sink.messages) == len(deliveries) + 1  # the first once more (at least once)


def test_a_send_batch_out_of_time_starts_no_send_that_could_end_past_it_and_queues_the_rest(
        alice, relay, settings, monkeypatch, clean_smtp_sink):
    # Slow targets: each send takes 10 s of a fake clock and the service may take 20 s to answer.
    # The batch may run 50 s: after four sends a fifth could end at 60 s, so it and the five after
    # it are not started. They go back on the queue, due and unclaimed, and go out exactly once.
    from outgoing import sending as outgoing_sending
    from pipeline.sweeper import sweep

    settings.MAILGATE_SEND_BATCH_SECONDS = 50
    relay.config = {**relay.config, "timeout": 20}
    relay.rate_per_minute = 0  # no limit of its own: the batch writes its SENDING rows up front
    relay.save()
    deliveries = distributed(alice, 6)[:10]
    OrmQ.objects.all().delete()  # distribute's own send tasks: this test runs the batch itself
    clock = [1000.0]
    monkeypatch.setattr(sending, "monotonic", lambda: clock[0])
    real_send = outgoing_sending.send

    def slow_send(*args, **kwargs):
        clock[0] += 10
        return real_send(*args, **kwargs)

    monkeypatch.setattr(outgoing_sending, "send", slow_send)
    assert tasks.send(deliveries) == "put back 6, sent 4"
    assert len(clean_smtp_sink.messages) == 4
    rest = deliveries[4:]
    assert task_ids("send") == [rest]  # one new task for the rest
    for delivery in Delivery.objects.filter(pk__in=rest):
        assert (delivery.status, delivery.attempts, delivery.claimed_by) == (Delivery.Status.SCHEDULED, 0, "")
    assert sweep()["due"] == 0  # queued already: the sweeper leaves them to their task

    monkeypatch.setattr(outgoing_sending, "send", real_send)  # a fast target again
    assert tasks.send(rest) == "sent 6"
    assert len(clean_smtp_sink.messages) == 10
    assert set(Delivery.objects.filter(pk__in=deliveries).values_list("status", "attempts")) == {
        (Delivery.Status.SENT, 1)}
    assert list(Event.objects.filter(delivery_id=rest[0]).order_by("pk").values_list("kind", "detail")) == [
        ("queued", Event.objects.get(delivery_id=rest[0], kind="queued").detail),
        ("sending", "attempt 1 via smtp to bob@example.test"),
        ("retry", "not sent: its send task ran out of time; queued again"),
        ("sending", "attempt 1 via smtp to bob@example.test"),
        ("sent", Event.objects.get(delivery_id=rest[0], kind="sent").detail)]


def distributed(owner, count: int) -> list[str]:
    """Ids of the due deliveries of `count` distributed messages, none sent yet."""
    ids = standardized(owner, count)
    tasks.distribute(ids)
    return [str(pk) for pk in Delivery.objects.filter(message_id__in=ids, status=Delivery.Status.SCHEDULED)
            .order_by("created_at", "pk").values_list("pk", flat=True)]


def test_a_send_batch_claims_its_fresh_deliveries_with_one_update_and_costs_two_statements_a_send(
        alice, relay, clean_smtp_sink):
    relay.rate_per_minute = 0  # no limit of its own: no token to take per send
    relay.save()
    deliveries = distributed(alice, 6)[:10]
    assert len(deliveries) == 10
    with CaptureQueriesContext(connection) as queries:
        assert tasks.send(deliveries) == "sent 10"
    sql = statements(queries)
    claims = [s for s in sql if s.startswith('UPDATE "pipeline_delivery"') and '"attempts" = ' in s]
    assert len(claims) == 1, claims  # one claim for the batch, not one per delivery
    # Per send: its outcome and its audit row; per batch: the claim, one read of the deliveries and
    # one of their attachments, the SENDING rows, the service's last success, one live hint.
    assert len(sql) <= 2 * 10 + 7, "\n".join(sql)
    assert len(clean_smtp_sink.messages) == 10
    for pk in deliveries:
        assert list(Event.objects.filter(delivery_id=pk).order_by("pk").values_list("kind", flat=True)) == [
            "queued", "sending", "sent"]
        assert Delivery.objects.get(pk=pk).attempts == 1


def test_a_delivery_that_started_before_is_claimed_alone_in_its_batch(alice, relay, clean_smtp_sink):
    # What a crash leaves (its worker died mid-send) once the sweeper brings it back: RETRYING,
    # one attempt used. It may be the delivery that killed its worker, so it is not claimed with
    # the batch; it still goes out, with its own second attempt.
    deliveries = distributed(alice, 2)
    suspect = deliveries[1]
    Delivery.objects.filter(pk=suspect).update(status=Delivery.Status.RETRYING, attempts=1)
    assert sending.claims.claim_fresh_deliveries(deliveries).keys() == set(deliveries) - {suspect}
    Delivery.objects.filter(pk__in=deliveries).update(status=Delivery.Status.SCHEDULED, attempts=0, claimed_by="")
    Delivery.objects.filter(pk=suspect).update(status=Delivery.Status.RETRYING, attempts=1)
    assert tasks.send(deliveries) == "sent 4"
    assert {str(pk): n for pk, n in Delivery.objects.filter(pk__in=deliveries).values_list("pk", "attempts")} == {
        pk: 2 if pk == suspect else 1 for pk in deliveries}


def test_a_retry_after_met_in_a_send_batch_holds_the_rest_of_the_batch(alice, clean_http_sink):
    from tests.servers.http import Response

    hook = make_service(alice, "webhook", {"url": clean_http_sink.url("/hook"), "timeout": 5},
                        {"signing_secret": "s3cret"}, rate_per_minute=0)
    route_everything(alice, hook)
    for name in ("bob", "carol"):
        subscribe(hook, name, "")
    clean_http_sink.respond("/hook", [Response(429, headers={"Retry-After": "60"}), Response(200, json={})])
    deliveries = distributed(alice, 2)
    assert len(deliveries) == 4
    tasks.send(deliveries)
    # The batch read the service before the 429 set its block; the rest of it must not be sent.
    assert len(clean_http_sink.requests) == 1
    held = Delivery.objects.filter(pk__in=deliveries[1:])
    assert all(d.status == Delivery.Status.SCHEDULED and d.attempts == 0 for d in held)
    for delivery in held:
        # Its timeline said "sending" (written with the batch's): it says why nothing went out.
        assert list(Event.objects.filter(delivery=delivery).order_by("pk").values_list("kind", "detail"))[-1][1] \
            .startswith("not sent: rate limit; next at ")


def test_a_rate_limited_service_drains_at_its_rate_not_at_the_sweepers(alice, clean_http_sink):
    # 60 a minute: a bucket of 10. A batch of 15 sends 10; the other 5 each get a task that no
    # worker takes before its token is due, a second apart, instead of waiting for the sweeper's
    # next run (once a minute) to all find one token and be held back again.
    from datetime import timedelta

    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    from pipeline.queue import Lane
    from pipeline.sweeper import sweep

    hook = make_service(alice, "webhook", {"url": clean_http_sink.url("/hook")}, {"signing_secret": "s3cret"},
                        rate_per_minute=60)
    route_everything(alice, hook)
    for name in ("bob", "carol", "dave"):
        subscribe(hook, name, "")
    deliveries = distributed(alice, 5)
    OrmQ.objects.all().delete()  # distribute's own send tasks: this test runs the batch itself
    started = timezone.now()
    assert tasks.send(deliveries) == "deferred 5, sent 10"
    held = deliveries[10:]
    later = sorted(OrmQ.objects.all(), key=lambda row: row.lock)
    assert [SignedPackage.loads(row.payload)["args"][0] for row in later] == held
    gaps = [(b.lock - a.lock).total_seconds() for a, b in zip(later, later[1:])]
    assert all(0.9 < gap < 1.1 for gap in gaps), gaps
    assert started < later[0].lock < started + timedelta(seconds=2)
    Delivery.objects.filter(pk__in=held).update(not_before=started)
    assert sweep()["due"] == 0  # their tasks are queued: the sweeper leaves them be

    broker = get_broker(Lane.LIVE.cluster)
    assert not broker.dequeue()  # none is due yet
    OrmQ.objects.update(lock=started)  # their time has come; so have the tokens
    Service.objects.filter(pk=hook.pk).update(bucket_updated_at=started - timedelta(seconds=10))
    while taken := broker.dequeue():
        for task_id, payload in taken:
            assert tasks.send(SignedPackage.loads(payload)["args"][0]) == "sent"
            broker.acknowledge(task_id)
    assert len(clean_http_sink.requests) == 15
    assert len({r.header("Idempotency-Key") for r in clean_http_sink.requests}) == 15
    assert set(Delivery.objects.filter(pk__in=deliveries).values_list("status", "attempts")) == {
        (Delivery.Status.SENT, 1)}


def test_a_stage_task_commits_or_rolls_back_with_the_row_it_names(alice):
    # The ORM broker's queue is a table of the same database: the task is inserted in the
    # transaction that readies the message, so neither exists without the other, and a
    # backlog stored in one transaction pays no BEGIN/COMMIT per task after it.
    from django.db import transaction

    OrmQ.objects.all().delete()
    with pytest.raises(RuntimeError, match="the caller failed"):
        with transaction.atomic():
            ingest(alice, eml(subject="Rolled back"))
            assert len(queued("standardize")) == 1  # already there, before any commit
            raise RuntimeError("the caller failed")
    assert not Message.objects.exists() and queued("standardize") == []
    with transaction.atomic():
        message = ingest(alice, eml(subject="Kept"))
    assert queued("standardize") == [f"standardize:{message.pk}"]


def test_a_backlog_stored_in_one_transaction_is_queued_in_tasks_of_a_stage_batch_not_one_each(alice, settings):
    # 2,000 one-message tasks were each polled, locked, run and deleted only to find their message
    # taken as a companion of another's batch. Separate transactions still queue a task each.
    from django.db import transaction

    settings.MAILGATE_STAGE_BATCH = 3
    OrmQ.objects.all().delete()
    with transaction.atomic():
        ids = [str(ingest(alice, eml(subject=f"Backlog {n}")).pk) for n in range(4)]
    assert sorted(queued("standardize")) == sorted([f"standardize:{ids[0]}+2", f"standardize:{ids[3]}"])
    assert sorted(task_ids("standardize")) == sorted([ids[:3], [ids[3]]])
    with transaction.atomic():
        first = str(ingest(alice, eml(subject="Later, alone")).pk)
    with transaction.atomic():
        second = str(ingest(alice, eml(subject="Later, alone too")).pk)
    assert [first] in task_ids("standardize") and [second] in task_ids("standardize")


def test_a_message_rolled_back_in_a_savepoint_leaves_the_task_it_joined_and_a_taken_task_takes_no_more(alice):
    from django.db import transaction

    OrmQ.objects.all().delete()
    with transaction.atomic():
        kept = str(ingest(alice, eml(subject="Kept")).pk)
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                ingest(alice, eml(subject="Rolled back"))
                raise RuntimeError("the savepoint fails")
        after = str(ingest(alice, eml(subject="After the savepoint")).pk)
        # A pusher takes the task (its compare-and-set on `lock`): what comes next is a new task.
        OrmQ.objects.update(lock=timezone.now() + timedelta(minutes=5))
        last = str(ingest(alice, eml(subject="After the pusher")).pk)
    assert Message.objects.count() == 3
    assert sorted(task_ids("standardize")) == sorted([[kept], [after], [last]])
