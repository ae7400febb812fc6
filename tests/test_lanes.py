"""Lanes and stage order with a real `manage.py worker` (both clusters): mail that just arrived is
relayed while a bulk backlog is still being worked through, and a backlog flows stage by stage
per batch instead of parsing everything before the first send (docs/pipeline.md "Lanes")."""

import pytest
from django.db.models import Count
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from outgoing.models import Service
from pipeline import queue
from pipeline.ingest import ingest_raw, store_raw
from pipeline.models import Delivery, Message
from tests.builders import account_row, eml, route_everything, subscribe
from tests.servers import procs
from tests.servers.waiting import eventually


BACKLOG = 1500


def webhook(owner, sink) -> Service:
    service = Service(owner=owner, kind="webhook", name="hook", rate_per_minute=0,
                      config={"url": sink.url("/hook"), "timeout": 5})
    service.set_secrets({"signing_secret": "s3cret"})
    service.save()
    return service


def bulk_backlog(owner, count: int) -> list[str]:
    """`count` imported messages waiting to be standardized, queued in the bulk lane as an import
    queues them (one raw file: the content does not matter, the amount of work does)."""
    name, digest = store_raw(eml(subject="Old newsletter", body="Archived text.\n" * 200))
    rows = Message.objects.bulk_create(
        Message(owner=owner, source=Message.Source.IMPORT, identity=f"backlog-{n}", raw=name, raw_sha256=digest,
                size=4000, status=Message.Status.RECEIVED) for n in range(count))
    ids = [str(m.pk) for m in rows]
    queue.enqueue_many(queue.Stage.STANDARDIZE, ids, queue.Lane.BULK)
    return ids


@pytest.mark.django_db
def test_a_lane_hands_out_control_tasks_then_sends_then_distributes_then_standardizes():
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m1"], queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.DISTRIBUTE, ["m2"], queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.SEND, ["d1"], queue.Lane.BULK)
    async_task("imap.tasks.sync_folder", 1, "INBOX", task_name="sync:1:INBOX", cluster=queue.Lane.BULK.cluster)
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["live"], queue.Lane.LIVE)
    bulk = get_broker(queue.Lane.BULK.cluster)

    order = []
    while taken := bulk.dequeue():
        for task_id, payload in taken:
            order.append(SignedPackage.loads(payload)["name"])
            bulk.acknowledge(task_id)
    assert order == ["sync:1:INBOX", "send:d1", "distribute:m2", "standardize:m1"]  # the live task is not the bulk lane's
    assert [SignedPackage.loads(p)["name"] for _, p in get_broker(queue.Lane.LIVE.cluster).dequeue()] == ["standardize:live"]


@pytest.mark.django_db
def test_vectors_wait_until_the_lane_has_no_pipeline_task_waiting_or_running():
    from django_q.brokers import get_broker

    queue.enqueue_many(queue.Stage.EMBED, ["m1"], queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m2"], queue.Lane.BULK)
    bulk = get_broker(queue.Lane.BULK.cluster)
    [(standardize, payload)] = bulk.dequeue()
    assert SignedPackage.loads(payload)["name"] == "standardize:m2"
    assert not bulk.dequeue()  # the standardize task is still running: its sends may follow
    bulk.acknowledge(standardize)
    assert [SignedPackage.loads(p)["name"] for _, p in bulk.dequeue()] == ["embed:m1"]


@pytest.mark.django_db
def test_a_task_queued_for_later_waits_for_its_time_without_holding_back_vectors():
    from datetime import timedelta

    from django.utils import timezone
    from django_q.brokers import get_broker
    from django_q.models import OrmQ

    soon = timezone.now() + timedelta(minutes=5)
    assert queue.enqueue_at(queue.Stage.SEND, ["d1"], soon, queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.EMBED, ["m1"], queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m2"], queue.Lane.BULK)
    bulk = get_broker(queue.Lane.BULK.cluster)

    def drain() -> list[str]:
        names = []
        while taken := bulk.dequeue():
            for task_id, payload in taken:
                names.append(SignedPackage.loads(payload)["name"])
                bulk.acknowledge(task_id)
        return names

    assert drain() == ["standardize:m2", "embed:m1"]  # the send waits for its time
    queue.enqueue_many(queue.Stage.DISTRIBUTE, ["m3"], queue.Lane.BULK)
    OrmQ.objects.filter(key__endswith="-later").update(lock=timezone.now() - timedelta(seconds=1))
    assert drain() == ["send:d1", "distribute:m3"]  # once due, before the stages upstream of it


@pytest.mark.django_db
def test_a_queued_task_goes_to_one_pusher_and_is_handed_out_again_once_its_lock_expires(settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.brokers import get_broker

    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m1"], queue.Lane.BULK)
    first, second = get_broker(queue.Lane.BULK.cluster), get_broker(queue.Lane.BULK.cluster)
    stale = first._ready(*first._table())  # what a slower pusher read just before the other took the row
    [(task_id, _)] = second.dequeue()
    first._ready = lambda connection, table: stale
    assert first.dequeue() == []  # its compare-and-set on the lock lost: the task runs once
    del first._ready
    OrmQ.objects.filter(pk=task_id).update(lock=timezone.now() - timedelta(seconds=1))  # its worker died
    assert [pk for pk, _ in first.dequeue()] == [task_id]


@pytest.mark.django_db
def test_a_backlog_is_queued_in_batches_and_a_message_alone_in_a_task_of_its_own():
    ids = [f"m{n}" for n in range(120)]
    queue.enqueue_many(queue.Stage.STANDARDIZE, ids, queue.Lane.BULK)
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["alone"], queue.Lane.LIVE)
    tasks = [row.task for row in OrmQ.objects.order_by("id")]
    assert [len(t["args"][0]) for t in tasks[:3]] == [50, 50, 20]
    assert tasks[3]["args"] == ("alone",) and tasks[3]["name"] == "standardize:alone"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_pushed_message_is_relayed_while_a_bulk_backlog_is_still_running(alice, clean_http_sink):
    service = webhook(alice, clean_http_sink)
    route_everything(alice, service)
    subscribe(service, "bob", "")
    account = account_row(alice)
    backlog = bulk_backlog(alice, BACKLOG)
    in_backlog = Delivery.objects.filter(message_id__in=backlog)

    worker = procs.start(["manage.py", "worker"], "worker-lanes", MAILGATE_STAGE_COMPANIONS="1",
                         MAILGATE_HAND_ON_ALONE="1")
    try:
        # The backlog flows at once: its first webhook leaves while most of it is still unparsed
        # (send and distribute tasks go before the lane's remaining standardize tasks).
        eventually(lambda: in_backlog.filter(status=Delivery.Status.SENT).exists(), 60,
                   "the backlog's first webhook")
        waiting = Message.objects.filter(pk__in=backlog, status=Message.Status.RECEIVED).count()
        assert waiting > BACKLOG // 2, f"only {waiting} of {BACKLOG} still unparsed at the first send"

        # Mail that just arrived (an IMAP message above history: the live lane) goes past it.
        live, created = ingest_raw(owner=alice, raw=eml(subject="Pushed just now"), identity="pushed-1",
                                   source=Message.Source.IMAP, account=account)
        assert created
        eventually(lambda: Delivery.objects.filter(message=live, status=Delivery.Status.SENT).exists(), 30,
                   "the pushed message's webhook")
        sent = in_backlog.filter(status=Delivery.Status.SENT).count()
        assert sent < BACKLOG, "the backlog finished first: the pushed message waited behind it"
    finally:
        procs.stop(worker)
    # Each relayed once by key (the webhook's Idempotency-Key is the delivery id).
    keys = [r.header("Idempotency-Key") for r in clean_http_sink.requests]
    assert len(keys) == len(set(keys))
    assert str(Delivery.objects.get(message=live).pk) in keys
    assert not Delivery.objects.values("message").annotate(n=Count("id")).filter(n__gt=1).exists()


def postgresql_only():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL pass only: LISTEN/NOTIFY (SQLite's pushers poll)")


@pytest.mark.django_db(transaction=True)
def test_an_idle_pusher_on_postgresql_wakes_at_the_commit_of_a_task_not_at_its_next_poll(monkeypatch):
    import threading

    from django.db import connections
    from django_q.brokers import get_broker

    from pipeline import broker

    postgresql_only()
    monkeypatch.setattr(broker, "NOTIFY_WAIT", 60)  # a poll would come far too late for this test
    bulk, waiting, taken = get_broker(queue.Lane.BULK.cluster), threading.Event(), []
    wait = bulk._wait
    bulk._wait = lambda connection: (waiting.set(), wait(connection))

    def pusher():
        try:
            while not (got := bulk.dequeue()):
                pass
            taken.extend(SignedPackage.loads(payload)["name"] for _, payload in got)
        finally:
            connections.close_all()

    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    assert waiting.wait(10), "the pusher never found its queue empty"
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m1"], queue.Lane.BULK)  # autocommit: committed here
    thread.join(10)
    assert taken == ["standardize:m1"], "the pusher slept through the commit"


@pytest.mark.django_db(transaction=True)
def test_a_pusher_whose_database_connection_dropped_reconnects_and_goes_on(monkeypatch):
    from django.db import OperationalError, connection
    from django_q.brokers import get_broker

    from pipeline import broker

    postgresql_only()
    monkeypatch.setattr(broker, "NOTIFY_WAIT", 0.01)
    monkeypatch.setattr(broker, "STALE_CHECK_EVERY", 3600)  # no stale-connection check to save it
    bulk = get_broker(queue.Lane.BULK.cluster)
    assert bulk.dequeue() is None  # listening on this thread's connection, the queue empty
    with pytest.raises(OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # as a server restart does
    assert bulk.dequeue() is None  # the poll failed; the connection is replaced, no exception
    queue.enqueue_many(queue.Stage.STANDARDIZE, ["m1"], queue.Lane.BULK)
    assert [SignedPackage.loads(p)["name"] for _, p in bulk.dequeue()] == ["standardize:m1"]
