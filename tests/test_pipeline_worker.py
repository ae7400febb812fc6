"""Acceptance with real processes: Dovecot → sync → qcluster → SMTP sink; SIGKILLed clusters;
a poison message that kills its worker every time."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from django.db.models import Count
from django.test import override_settings
from django_q.models import OrmQ

from imap.sync import sync_account_now
from outgoing.models import Service
from pipeline import queue, sweeper
from pipeline.models import Delivery, Event, Message, Subscriber, Subscription
from tests.builders import eml, inbox_relayed_to, ingest, route_everything, subscribe
from tests.servers import procs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def wait_until(check, timeout, sweep_every=None, what=""):
    """Poll a cross-process condition with a deadline; optionally run the sweeper every
    `sweep_every` seconds, as the cluster's schedule would (Django Q schedules in whole minutes)."""
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {(what() if callable(what) else what) or check}")
        if sweep_every and time.monotonic() >= next_sweep:
            sweeper.sweep()
            next_sweep = time.monotonic() + sweep_every
        time.sleep(0.2)


def statuses() -> dict:
    """Deliveries and messages by status (what a timed-out wait shows)."""
    stuck = Message.objects.exclude(status="distributed")
    return {"deliveries": dict(Delivery.objects.values_list("status").annotate(n=Count("id"))),
            "messages": dict(Message.objects.values_list("status").annotate(n=Count("id"))),
            "stuck": [(m.attempts, m.claimed_by, m.claimed_until, m.updated_at,
                       list(Event.objects.filter(message=m).values_list("kind", "detail", "worker"))) for m in stuck],
            "queue": [(q.key, q.lock, q.task.get("name")) for q in OrmQ.objects.all()]}


def start_cluster(name, **env):
    """A bare qcluster, for tests that SIGKILL the cluster itself."""
    return procs.start(["manage.py", "qcluster"], name, **env)


def start_clusters(name, **env):
    """The bulk lane's bare qcluster (imports go there), for tests that SIGKILL it; in a list, as
    a test may start several."""
    return [start_cluster(f"{name}-bulk", Q_CLUSTER_NAME="mailgate-bulk", **env)]


def start_worker(name, **env):
    """The Procfile's worker (`manage.py worker`, qcluster in a session of its own)."""
    return procs.start(["manage.py", "worker"], name, **env)


def test_mail_appended_to_dovecot_reaches_three_subscribers_but_not_its_sender(
        alice, dovecot, mail_user, clean_smtp_sink):
    account, service = inbox_relayed_to(alice, dovecot, mail_user, clean_smtp_sink)
    for name in ("bob", "carol", "erin"):
        subscribe(service, name, f"{name}@example.test")
    subscribe(service, "dora", "dora.private@example.test", addresses=["dora@example.test"])

    assert not sync_account_now(account).errors  # connected while empty: what arrives next is new
    cluster = start_worker("worker-e2e")
    try:
        dovecot.append(mail_user.name, "INBOX", eml(subject="Board meeting", sender="Dora <dora@example.test>"))
        report = sync_account_now(account)
        assert not report.errors
        received = clean_smtp_sink.wait_for(3, timeout=30)
        assert sorted(r for m in received for r in m.rcpt_tos) == [
            "bob@example.test", "carol@example.test", "erin@example.test"]
        message = Message.objects.get(owner=alice)
        wait_until(lambda: Delivery.objects.filter(message=message, status="sent").count() == 3, 10)
        timeline = list(Event.objects.filter(message=message).values_list("kind", flat=True))
        assert timeline[:4] == ["fetched", "received", "standardized", "distributed"]
        assert timeline.count("queued") == timeline.count("sending") == timeline.count("sent") == 3
        assert len({w for w in Event.objects.filter(message=message).values_list("worker", flat=True)}) >= 1

        # One of our relayed copies lands in the ingested mailbox: it must not go round again.
        dovecot.append(mail_user.name, "INBOX", received[0].raw)
        assert not sync_account_now(account).errors
        echo = wait_until(lambda: Message.objects.filter(owner=alice, status="suppressed").first(), 20)
        assert echo.suppressed_reason.startswith("loop: relayed by this mailgate")
        assert not Delivery.objects.filter(message=echo).exists()
        assert len(clean_smtp_sink.messages) == 3
    finally:
        procs.stop(cluster)


@override_settings(MAILGATE_STAGE_DEADLINE=5)
def test_sigkilled_clusters_lose_no_delivery_and_send_each_once_by_key(alice, clean_http_sink):
    service = Service(owner=alice, kind="webhook", name="hook", rate_per_minute=0,
                      config={"url": clean_http_sink.url("/hook"), "timeout": 5})
    service.set_secrets({"signing_secret": "s3cret"})
    service.save()
    route_everything(alice, service)
    # Enough work to outlast a few kills: 1,000 deliveries (500 were sent between two kills once
    # a commit's live hints went out together).
    subscribers = Subscriber.objects.bulk_create(Subscriber(owner=alice, name=f"s{i}") for i in range(200))
    Subscription.objects.bulk_create(Subscription(subscriber=s, service=service, address="") for s in subscribers)
    messages = [ingest(alice, eml(subject=f"Load {n}", body="x\n")) for n in range(5)]
    # All five in one standardize task, so a kill can land in the middle of a batch (sends go
    # in batches of MAILGATE_SEND_BATCH anyway).
    OrmQ.objects.all().delete()
    queue.enqueue_many(queue.Stage.STANDARDIZE, [m.pk for m in messages], queue.Lane.BULK)
    # The stage deadline outlasts the task timeout (mailgate.E007), as in production.
    env = {"MAILGATE_STAGE_DEADLINE": "5", "MAILGATE_TASK_TIMEOUT": "4", "MAILGATE_TASK_RETRY": "6",
           "MAILGATE_STAGE_COMPANIONS": "1", "MAILGATE_HAND_ON_ALONE": "1"}  # batches as in production

    rng = random.Random(20250303)
    kills = 0
    clusters = start_clusters("qcluster-kill", **env)
    try:
        started = time.monotonic()
        while kills < 6 and Delivery.objects.filter(status="sent").count() < 1000:
            time.sleep(rng.uniform(0.5, 2.0))  # a random moment to pull the plug
            for cluster in clusters:
                procs.stop(cluster, sig=signal.SIGKILL)
            kills += 1
            sweeper.sweep()
            clusters = start_clusters("qcluster-kill", **env)
        wait_until(lambda: Delivery.objects.filter(status="sent").count() == 1000, 90 - (time.monotonic() - started),
                   sweep_every=2, what=lambda: f"all 1000 deliveries SENT: {statuses()}")
    finally:
        for cluster in clusters:
            procs.stop(cluster)
    ids = {str(pk) for pk in Delivery.objects.values_list("pk", flat=True)}
    keys = [r.header("Idempotency-Key") for r in clean_http_sink.requests]
    assert len(ids) == 1000 and set(keys) == ids
    sent_events = list(Event.objects.filter(kind="sent").values_list("delivery_id", flat=True))
    assert len(sent_events) == len(set(sent_events)) == 1000
    assert kills >= 3, "the cluster finished before it could be killed a few times"
    print(f"\n{kills} kills; {len(keys)} requests for 1000 deliveries ({len(keys) - 1000} repeats)", file=sys.stderr)


POISON_WORKER = """
import os, django
django.setup()
import pipeline.parsing
# Test-only hook: a message with "Poison" in it kills the worker process every time it is parsed.
parse_message = pipeline.parsing.parse_message
pipeline.parsing.parse_message = lambda raw, limits=None: os._exit(7) if b"Poison" in raw else parse_message(raw, limits)
from django.core.management import call_command
call_command("qcluster")
"""
POISON_ENV = {"MAILGATE_STAGE_DEADLINE": "1", "MAILGATE_PIPELINE_MAX_ATTEMPTS": "3", "MAILGATE_TASK_TIMEOUT": "1",
              "MAILGATE_TASK_RETRY": "2", "Q_CLUSTER_NAME": "mailgate-bulk",  # imports go to the bulk lane
              "MAILGATE_STAGE_COMPANIONS": "1", "MAILGATE_HAND_ON_ALONE": "1"}


@override_settings(MAILGATE_STAGE_DEADLINE=1, MAILGATE_PIPELINE_MAX_ATTEMPTS=3)
def test_a_message_that_crashes_its_worker_every_time_ends_dead(alice):
    message = ingest(alice, eml(subject="Poison"))
    cluster = procs.start(["-c", POISON_WORKER], "qcluster-poison", **POISON_ENV)
    try:
        wait_until(lambda: Message.objects.filter(pk=message.pk, status="dead").exists(), 45, sweep_every=1,
                   what="poison message DEAD")
    finally:
        procs.stop(cluster)
    message.refresh_from_db()
    assert message.attempts == 4  # three crashes, then the fourth start gives up without parsing
    kinds = list(Event.objects.filter(message=message).values_list("kind", flat=True))
    assert kinds == ["received", "crashed", "crashed", "dead"]


@override_settings(MAILGATE_STAGE_DEADLINE=1, MAILGATE_PIPELINE_MAX_ATTEMPTS=3)
def test_a_poison_message_in_a_batch_ends_dead_alone_and_its_batch_mates_go_on(alice):
    mates = [ingest(alice, eml(subject=f"Mate {n}")) for n in range(4)]
    poison = ingest(alice, eml(subject="Poison"))
    OrmQ.objects.all().delete()
    queue.enqueue_many(queue.Stage.STANDARDIZE, [m.pk for m in [*mates[:2], poison, *mates[2:]]], queue.Lane.BULK)
    assert OrmQ.objects.count() == 1  # one task for the five
    cluster = procs.start(["-c", POISON_WORKER], "qcluster-poison-batch", **POISON_ENV)
    try:
        wait_until(lambda: Message.objects.filter(pk=poison.pk, status="dead").exists(), 60, sweep_every=1,
                   what="poison message DEAD")
        wait_until(lambda: Message.objects.filter(pk__in=[m.pk for m in mates], status="distributed").count() == 4,
                   30, sweep_every=1, what="the batch-mates standardized and distributed")
    finally:
        procs.stop(cluster)
    assert not Message.objects.filter(pk__in=[m.pk for m in mates], status="dead").exists()
    poison.refresh_from_db()
    assert poison.attempts == 4
    kinds = list(Event.objects.filter(message=poison).values_list("kind", flat=True))
    assert kinds[0] == "received" and kinds[-1] == "dead" and kinds.count("crashed") == 2


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(child) for child in fh.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_the_procfile_worker_stops_cleanly_when_its_whole_process_group_gets_sigterm():
    """honcho (./scripts/run) stops a process by signalling its whole group; a bare `qcluster`
    then hangs until SIGKILL (pipeline/management/commands/worker.py says why)."""
    name = f"worker-group-stop-{random.randrange(10**9)}"
    worker = start_worker(name)
    try:
        wait_until(lambda: procs.log_text(name).count(" running.") == 2, 60, what="both lanes' clusters running")
        clusters = _children(worker.pid)
        assert len(clusters) == 2  # live and bulk
        os.killpg(worker.pid, signal.SIGTERM)  # what honcho does on Ctrl-C
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not stop within 30 s of SIGTERM:\n{procs.log_text(name)[-3000:]}")
    finally:
        procs.stop(worker, sig=signal.SIGKILL)
    assert code == 0
    assert procs.log_text(name).count(" has stopped.") == 2  # django-q's own clean-stop line
    assert not any(_alive(cluster) for cluster in clusters)


def test_a_killed_worker_takes_its_cluster_with_it():
    name = f"worker-killed-{random.randrange(10**9)}"
    worker = start_worker(name)
    try:
        wait_until(lambda: procs.log_text(name).count(" running.") == 2, 60, what="both lanes' clusters running")
        clusters = _children(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        # The kernel signals the clusters when their parent dies; they then stop the django-q way.
        wait_until(lambda: not any(_alive(cluster) for cluster in clusters), 30, what="the orphaned clusters gone")
    finally:
        procs.stop(worker, sig=signal.SIGKILL)
    assert procs.log_text(name).count(" has stopped.") == 2
