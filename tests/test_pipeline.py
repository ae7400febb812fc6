"""The pipeline stages run synchronously, in order, against the real SMTP sink.

Each stage is called the way the worker calls it (pipeline.tasks.*); tests that need a real worker
process are in tests/test_pipeline_worker.py.
"""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.test import override_settings
from django_q.models import OrmQ

from outgoing.models import Service
from outgoing.relay import relay_header_value
from pipeline import clock, loops, sending, sweeper, tasks
from pipeline.models import Attachment, Delivery, Event, Message, Route, Subscriber, Thread
from tests.builders import eml, ingest, queued_delivery, route_everything, run_stages, smtp_service, subscribe

pytestmark = pytest.mark.django_db


# --- helpers --------------------------------------------------------------------------------------

def kinds(message) -> list[str]:
    return list(Event.objects.filter(message=message).values_list("kind", flat=True))


@pytest.fixture
def team(alice, clean_smtp_sink):
    """Alice relays everything by SMTP to bob, carol and erin; dora subscribes too but is the sender."""
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    for name in ("bob", "carol", "erin"):
        subscribe(service, name, f"{name}@example.test")
    subscribe(service, "dora", "dora.private@example.test", addresses=["Dora@Example.test"])
    return service


# --- standardize ----------------------------------------------------------------------------------

def test_standardize_fills_the_standard_fields(alice):
    message = ingest(alice, eml(attachment=("report.pdf", b"%PDF-1.4 numbers")))
    assert tasks.standardize(str(message.pk)) == "standardized"
    message.refresh_from_db()
    assert message.status == Message.Status.STANDARDIZED
    assert (message.subject, message.sender_name, message.sender_address) == ("Quarterly numbers", "Dora",
                                                                              "dora@example.test")
    assert message.to == [{"name": "", "address": "team@example.test"}]
    assert message.snippet.startswith("Hi all")
    assert message.has_attachments and message.thread is not None
    assert message.attempts == 0 and message.claimed_until is None


def test_attachments_are_stored_under_a_uuid_never_their_own_name(alice):
    message = ingest(alice, eml(attachment=("../../etc/passwd", b"root:x:0:0")))
    tasks.standardize(str(message.pk))
    [attachment] = Attachment.objects.filter(message=message)
    assert attachment.file.name == f"attachments/{attachment.id.hex[:2]}/{attachment.id.hex}"
    assert "passwd" not in attachment.file.name and "/" not in attachment.filename
    with default_storage.open(attachment.file.name, "rb") as fh:
        assert fh.read() == b"root:x:0:0"


def test_standardizing_twice_duplicates_nothing(alice):
    message = ingest(alice, eml(attachment=("a.pdf", b"one")))
    tasks.standardize(str(message.pk))
    first = list(Attachment.objects.filter(message=message).values_list("id", "file"))
    assert tasks.standardize(str(message.pk)) == "skipped"  # already moved on
    # Even forced back (as after a crash between the commit and the queue), nothing doubles.
    Message.objects.filter(pk=message.pk).update(status=Message.Status.RECEIVED)
    assert tasks.standardize(str(message.pk)) == "standardized"
    assert list(Attachment.objects.filter(message=message).values_list("id", "file")) == first
    assert Thread.objects.filter(owner=alice).count() == 1


def test_a_reply_joins_the_thread_of_the_message_it_references(alice):
    first = ingest(alice, eml(message_id="<m1@example.test>"))
    reply = ingest(alice, eml(subject="Totally different", sender="bob@example.test",
                              message_id="<m2@example.test>", in_reply_to="<m1@example.test>"))
    for m in (first, reply):
        tasks.standardize(str(m.pk))
    first.refresh_from_db(), reply.refresh_from_db()
    assert reply.thread_id == first.thread_id
    assert reply.thread.message_count == 2


def test_same_subject_and_a_shared_participant_make_one_thread(alice):
    a = ingest(alice, eml(subject="Lunch?", sender="bob@example.test", to="alice@example.test"))
    b = ingest(alice, eml(subject="Re: lunch?", sender="alice@example.test", to="bob@example.test"))
    stranger = ingest(alice, eml(subject="Lunch?", sender="zed@example.test", to="yan@example.test"))
    for m in (a, b, stranger):
        tasks.standardize(str(m.pk))
    a.refresh_from_db(), b.refresh_from_db(), stranger.refresh_from_db()
    assert a.thread_id == b.thread_id != stranger.thread_id


def test_references_never_cross_owners(alice, bob):
    ingest(bob, eml(message_id="<shared@example.test>"))
    tasks.standardize(str(Message.objects.get(owner=bob).pk))
    mine = ingest(alice, eml(subject="Other", in_reply_to="<shared@example.test>"))
    tasks.standardize(str(mine.pk))
    mine.refresh_from_db()
    assert mine.thread.owner == alice


# --- loops ----------------------------------------------------------------------------------------

def test_mail_mailgate_relayed_is_suppressed_and_not_distributed(alice, team):
    relayed = ingest(alice, eml(headers={"X-Mailgate-Relay": relay_header_value("abc")}))
    assert tasks.standardize(str(relayed.pk)) == "suppressed"
    relayed.refresh_from_db()
    assert relayed.status == Message.Status.SUPPRESSED
    assert relayed.suppressed_reason.startswith("loop: relayed by this mailgate")
    assert tasks.distribute(str(relayed.pk)) == "skipped"
    assert not Delivery.objects.filter(message=relayed).exists()
    assert kinds(relayed) == ["received", "standardized", "suppressed"]


def test_an_out_of_office_reply_is_suppressed(alice):
    message = ingest(alice, eml(headers={"Auto-Submitted": "auto-replied"}))
    assert tasks.standardize(str(message.pk)) == "suppressed"


def test_a_copy_of_a_list_we_relay_to_is_suppressed(alice, team):
    subscribe(team, "the list", "all-hands@lists.example.test")
    message = ingest(alice, eml(headers={"List-Id": "All hands <all-hands.lists.example.test>"}))
    assert tasks.standardize(str(message.pk)) == "suppressed"


@pytest.mark.parametrize("value", [b"<>", b""])
def test_an_empty_return_path_is_suppressed_as_a_bounce_and_an_absent_one_is_not(alice, value):
    bounce = ingest(alice, b"Return-Path: " + value + b"\n" + eml())
    assert tasks.standardize(str(bounce.pk)) == "suppressed"
    bounce.refresh_from_db()
    assert bounce.suppressed_reason == "bounce: empty Return-Path"
    plain = ingest(alice, eml(subject="No Return-Path at all"))
    assert tasks.standardize(str(plain.pk)) == "standardized"


# --- distribute and queue -------------------------------------------------------------------------

def test_three_subscribers_receive_it_and_the_sender_does_not(alice, team, clean_smtp_sink):
    message = ingest(alice, eml())
    outcomes = run_stages(message)
    assert outcomes == ["standardized", "distributed", "sent", "sent", "sent"]
    received = clean_smtp_sink.wait_for(3, timeout=5)
    assert sorted(r for m in received for r in m.rcpt_tos) == [
        "bob@example.test", "carol@example.test", "erin@example.test"]
    assert all(m.message[loops.settings.MAILGATE_RELAY_HEADER] for m in received)
    assert kinds(message)[:6] == ["received", "standardized", "distributed", "queued", "queued", "queued"]
    assert kinds(message).count("sending") == kinds(message).count("sent") == 3


def test_distributing_twice_queues_nothing_more(alice, team):
    message = ingest(alice, eml())
    tasks.standardize(str(message.pk))
    tasks.distribute(str(message.pk))
    Message.objects.filter(pk=message.pk).update(status=Message.Status.STANDARDIZED)
    assert tasks.distribute(str(message.pk)) == "distributed"
    assert Delivery.objects.filter(message=message).count() == 3


def test_routes_match_on_subject_and_attachment(alice, clean_smtp_sink):
    pdfs = smtp_service(alice, clean_smtp_sink, name="pdfs")
    subscribe(pdfs, "bob", "bob@example.test")
    route_everything(alice, pdfs, subject_pattern=r"^invoice \d+", has_attachment=True)
    hit = ingest(alice, eml(subject="Invoice 42", attachment=("i.pdf", b"x")))
    no_file = ingest(alice, eml(subject="Invoice 43"))
    other = ingest(alice, eml(subject="Re: Invoice 42", attachment=("i.pdf", b"x")))
    for m in (hit, no_file, other):
        tasks.standardize(str(m.pk)), tasks.distribute(str(m.pk))
    assert list(Delivery.objects.values_list("message_id", flat=True)) == [hit.pk]


def test_a_route_with_an_invalid_regex_is_rejected_with_a_clear_message(alice):
    route = Route(owner=alice, name="broken", from_pattern="(unclosed", subject_pattern="ok")
    with pytest.raises(ValidationError) as err:
        route.clean()
    assert err.value.message_dict == {
        "from_pattern": ["Not a valid regular expression: missing ), unterminated subpattern at position 0."]}


# --- send -----------------------------------------------------------------------------------------

def test_a_sent_delivery_records_the_remote_id_and_the_services_success(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    assert tasks.send(str(delivery.pk)) == "sent"
    delivery.refresh_from_db(), service.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT and delivery.remote_id.startswith("<")
    assert service.last_success_at is not None
    assert tasks.send(str(delivery.pk)) == "skipped"  # run twice: nothing more is sent
    assert len(clean_smtp_sink.wait_for(1)) == 1


def test_a_permanent_error_fails_the_delivery_with_the_services_text(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    clean_smtp_sink.fail_next(1, code=550, text="5.1.1 No such user")
    assert tasks.send(str(delivery.pk)) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED and "5.1.1 No such user" in delivery.last_error


@override_settings(MAILGATE_DELIVERY_MAX_ATTEMPTS=2, MAILGATE_RETRY_BASE_SECONDS=60)
def test_a_transient_error_retries_with_backoff_then_ends_dead(alice, clean_smtp_sink, monkeypatch):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    clean_smtp_sink.fail_next(2, code=451)
    started = clock.now()
    assert tasks.send(str(delivery.pk)) == "retrying"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RETRYING
    assert started + timedelta(seconds=29) < delivery.not_before < started + timedelta(seconds=61)
    assert tasks.send(str(delivery.pk)) == "skipped"  # not due yet
    monkeypatch.setattr(clock, "now", lambda: started + timedelta(minutes=2))
    assert tasks.send(str(delivery.pk)) == "dead"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DEAD and delivery.attempts == 2


def test_retry_after_pushes_the_retry_and_blocks_the_service(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    delivery = queued_delivery(alice, route_everything(alice, service) and service)
    error = sending.TransportError("429 slow down", retry_after=3600)
    delivery = sending.claims.claim_delivery(delivery.pk)
    assert sending._failed(delivery, service, error) == "retrying"
    delivery.refresh_from_db(), service.refresh_from_db()
    assert delivery.not_before >= clock.now() + timedelta(seconds=3590)
    assert service.blocked_until >= clock.now() + timedelta(seconds=3590)


def test_without_a_token_the_delivery_is_rescheduled_not_slept_on(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink, rate_per_minute=1)
    route_everything(alice, service)
    first = queued_delivery(alice, service, "bob@example.test")
    second = queued_delivery(alice, service, "carol@example.test")
    assert tasks.send(str(first.pk)) == "sent"
    assert tasks.send(str(second.pk)) == "deferred"
    second.refresh_from_db()
    assert second.status == Delivery.Status.SCHEDULED and second.attempts == 0
    assert clock.now() + timedelta(seconds=50) < second.not_before <= clock.now() + timedelta(seconds=61)


def test_a_service_blocked_by_a_retry_after_defers_the_send_without_using_an_attempt(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    blocked = clock.now() + timedelta(seconds=30)
    Service.objects.filter(pk=service.pk).update(blocked_until=blocked)
    assert tasks.send(str(delivery.pk)) == "deferred"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SCHEDULED and delivery.attempts == 0
    assert blocked - timedelta(seconds=1) < delivery.not_before <= blocked + timedelta(seconds=1)
    assert clean_smtp_sink.messages == [] and "sending" not in kinds(delivery.message)


def test_a_shorter_retry_after_never_shortens_the_services_block(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    first, second = queued_delivery(alice, service), queued_delivery(alice, service, "carol@example.test")
    sending._failed(sending.claims.claim_delivery(first.pk), service, sending.TransportError("429", retry_after=3600))
    sending._failed(sending.claims.claim_delivery(second.pk), service, sending.TransportError("429", retry_after=5))
    service.refresh_from_db()
    assert service.blocked_until >= clock.now() + timedelta(seconds=3590)


def test_a_retry_keeps_the_remote_ids_of_the_parts_already_sent(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    Delivery.objects.filter(pk=delivery.pk).update(remote_id="11,12")  # two parts of three went out
    clean_smtp_sink.fail_next(1, code=451)
    assert tasks.send(str(delivery.pk)) == "retrying"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.remote_id) == (Delivery.Status.RETRYING, "11,12")


def test_a_service_whose_secrets_cannot_be_decrypted_fails_the_delivery_at_once(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    Service.objects.filter(pk=service.pk).update(secrets_encrypted="gAAAAA-not-a-token")
    assert tasks.send(str(delivery.pk)) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED and "enter them again" in delivery.last_error
    assert clean_smtp_sink.messages == []


def test_a_delivery_waits_for_its_window_and_goes_when_it_opens(alice, clean_smtp_sink, monkeypatch):
    start = clock.now().replace(microsecond=0)
    opens = (start + timedelta(hours=1)).time()
    closes = (start + timedelta(hours=3)).time()
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service, window_start=opens, window_end=closes)
    assert delivery.status == Delivery.Status.SCHEDULED
    assert delivery.not_before == start + timedelta(hours=1)

    monkeypatch.setattr(clock, "now", lambda: start + timedelta(minutes=59))
    assert sweeper.sweep()["due"] == 0
    assert tasks.send(str(delivery.pk)) == "skipped"

    monkeypatch.setattr(clock, "now", lambda: start + timedelta(minutes=60, seconds=1))
    OrmQ.objects.all().delete()
    assert sweeper.sweep()["due"] == 1
    assert [task.name() for task in OrmQ.objects.all()] == [f"send:{delivery.pk}"]
    assert tasks.send(str(delivery.pk)) == "sent"
    assert clean_smtp_sink.wait_for(1)[0].rcpt_tos == ["bob@example.test"]


# --- sweeper, admin, events -----------------------------------------------------------------------

@override_settings(MAILGATE_STAGE_DEADLINE=60)
def test_the_sweeper_re_enqueues_a_message_whose_task_was_lost(alice, monkeypatch):
    message = ingest(alice, eml())
    OrmQ.objects.all().delete()  # the queue row is lost
    assert sweeper.sweep()["messages"] == 0  # not yet past the deadline
    later = clock.now() + timedelta(seconds=61)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert sweeper.sweep()["messages"] == 1
    assert [task.name() for task in OrmQ.objects.all()] == [f"standardize:{message.pk}"]
    assert sweeper.sweep()["messages"] == 0  # enqueued once per deadline, not on every sweep


@override_settings(MAILGATE_STAGE_DEADLINE=60)
def test_a_delivery_abandoned_mid_send_is_handed_to_another_worker(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = sending.claims.claim_delivery(queued_delivery(alice, service).pk)  # then the worker dies
    assert sweeper.sweep()["abandoned"] == 0  # the lease is live
    # Leases run on the database's clock (moving this worker's clock must not expire them: see
    # tests/test_faults.py), so the deadline passing is written into the row.
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=clock.now() - timedelta(seconds=1))
    assert sweeper.sweep()["abandoned"] == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.RETRYING
    assert tasks.send(str(delivery.pk)) == "sent"
    assert "crashed" in kinds(delivery.message)


def test_admin_can_retry_cancel_and_see_the_timeline_and_queue_depth(alice, admin_user, client, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    delivery = queued_delivery(alice, service)
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.DEAD)
    client.force_login(admin_user)
    response = client.post("/admin/pipeline/delivery/", {"action": "retry", "_selected_action": [str(delivery.pk)]})
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SCHEDULED and delivery.attempts == 0
    client.post("/admin/pipeline/delivery/", {"action": "cancel", "_selected_action": [str(delivery.pk)]})
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.CANCELLED
    page = client.get(f"/admin/pipeline/message/{delivery.message_id}/change/").content.decode()
    assert "event timeline" in page.lower() and "requeued" in page.lower() and "cancelled by an admin" in page
    index = client.get("/admin/").content.decode()
    assert "Pipeline queue depth" in index


def test_a_staff_user_sees_and_acts_on_only_their_own_pipeline_rows_in_admin(alice, bob, client, clean_smtp_sink):
    from django.contrib.auth.models import Permission

    alices_service = smtp_service(alice, clean_smtp_sink, name="Alice relay")
    route_everything(alice, alices_service)
    alices = queued_delivery(alice, alices_service)
    Delivery.objects.filter(pk=alices.pk).update(status=Delivery.Status.DEAD)
    bobs_service = smtp_service(bob, clean_smtp_sink, name="Bob relay")
    bobs_message = ingest(bob, eml(subject="Bob's own"))
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(*Permission.objects.filter(content_type__app_label="pipeline"))
    client.force_login(bob)

    messages = client.get("/admin/pipeline/message/").content.decode()
    assert f"/admin/pipeline/message/{bobs_message.pk}/change/" in messages
    assert f"/admin/pipeline/message/{alices.message_id}/change/" not in messages
    assert client.get(f"/admin/pipeline/message/{alices.message_id}/change/").status_code == 302  # "not found"
    assert client.get(f"/admin/pipeline/message/{bobs_message.pk}/change/").status_code == 200
    assert str(alices.pk) not in client.get("/admin/pipeline/delivery/").content.decode()
    # An action on Alice's id does nothing: the action's queryset is Bob's rows only.
    client.post("/admin/pipeline/delivery/", {"action": "retry", "_selected_action": [str(alices.pk)]})
    alices.refresh_from_db()
    assert alices.status == Delivery.Status.DEAD
    for model in (Route, Subscriber, Event, Thread):
        page = client.get(f"/admin/pipeline/{model._meta.model_name}/").content.decode()
        alices_rows = model.objects.filter(owner=alice).values_list("pk", flat=True)
        assert alices_rows and not any(f"/{pk}/change/" in page for pk in alices_rows), model
    # Choices name only Bob's services, and what he adds is his, whatever owner he posts.
    form = client.get("/admin/pipeline/route/add/").content.decode()
    assert "Bob relay" in form and "Alice relay" not in form
    response = client.post("/admin/pipeline/route/add/", {
        "name": "mine", "owner": str(alice.pk), "enabled": "on", "services": [str(bobs_service.pk)],
        "folder_pattern": "", "from_pattern": "", "to_pattern": "", "subject_pattern": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Route.objects.get(name="mine").owner == bob
    refused = client.post("/admin/pipeline/route/add/", {
        "name": "theirs", "enabled": "on", "services": [str(alices_service.pk)]})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    index = client.get("/admin/").content.decode()
    assert '<th scope="row">dead or failed deliveries</th><td>0</td>' in index  # Alice's dead one not counted


def test_each_stage_publishes_to_the_owners_group(alice, team, django_capture_on_commit_callbacks):
    from mailgate.realtime import user_group
    from mailgate.realtime import channel_layer

    layer = channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(alice.pk), channel)
    message = ingest(alice, eml())
    with django_capture_on_commit_callbacks(execute=True):
        run_stages(message)
    seen = []
    while True:
        try:
            event = async_to_sync(_receive_now)(layer, channel)
        except TimeoutError:
            break
        seen.append((event["event"], event["data"]["status"]))
    assert ("message.new", "standardized") in seen
    assert ("message.updated", "distributed") in seen
    assert seen.count(("delivery.updated", "sent")) == 3


async def _receive_now(layer, channel):
    import asyncio

    return await asyncio.wait_for(layer.receive(channel), timeout=0.2)
