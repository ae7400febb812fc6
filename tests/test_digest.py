"""Daily digests (pipeline/digest.py): one combined message per subscription at its digest time,
delivered to a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipeline import clock, tasks
from pipeline.models import Delivery, Event
from tests.builders import eml, ingest, route_everything, run_stages, smtp_service, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def digest_setup(alice, clean_smtp_sink):
    """bob takes a daily digest two hours from now; carol takes each message at once."""
    start = clock.now().replace(microsecond=0)
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    bob = subscribe(service, "bob", "bob@example.test", mode="digest",
                    digest_time=(start + timedelta(hours=2)).time(), timezone="UTC")
    subscribe(service, "carol", "carol@example.test")
    return start, bob


def mail_three(alice) -> list:
    messages = [ingest(alice, eml(subject=f"Report {n}", message_id=f"<report-{n}@example.test>",
                                  body=f"Numbers for week {n}.\n")) for n in range(3)]
    for message in messages:
        run_stages(message)
        message.refresh_from_db()
    return messages


def test_a_digest_is_one_message_listing_every_due_one_and_each_delivery_records_it(
        alice, clean_smtp_sink, digest_setup, monkeypatch):
    start, bob = digest_setup
    messages = mail_three(alice)
    # carol has hers at once; bob's wait for the digest time.
    assert [m.rcpt_tos for m in clean_smtp_sink.wait_for(3)] == [["carol@example.test"]] * 3
    waiting = Delivery.objects.filter(subscription=bob)
    assert waiting.count() == 3
    assert set(waiting.values_list("status", "not_before")) == {(Delivery.Status.SCHEDULED,
                                                                  start + timedelta(hours=2))}

    monkeypatch.setattr(clock, "now", lambda: start + timedelta(hours=2, seconds=1))
    # The sweeper queues one send task per delivery; whichever runs first takes the whole group.
    ids = list(waiting.order_by("-created_at").values_list("pk", flat=True))
    assert [tasks.send(str(pk)) for pk in ids] == ["sent", "skipped", "skipped"]

    received = clean_smtp_sink.wait_for(4)
    assert len(received) == 4
    digest = received[3]
    assert digest.rcpt_tos == ["bob@example.test"] and digest.subject == "Digest: 3 messages"
    text = digest.message.get_body(("plain",)).get_content()
    positions = [text.index(f"Report {n}") for n in range(3)]
    assert positions == sorted(positions) and "Numbers for week 2." in text
    assert "Dora" in text and f"{messages[0].date:%Y-%m-%d %H:%M}" in text

    assert set(waiting.values_list("status", flat=True)) == {Delivery.Status.SENT}
    assert len(set(waiting.values_list("remote_id", flat=True))) == 1
    for message in messages:
        sent = Event.objects.get(message=message, kind=Event.Kind.SENT, delivery__subscription=bob)
        assert sent.detail.endswith("in a digest of 3")


def test_a_failed_digest_retries_as_one_group_and_then_goes_once(
        alice, clean_smtp_sink, digest_setup, monkeypatch):
    start, bob = digest_setup
    mail_three(alice)
    clean_smtp_sink.wait_for(3)
    clean_smtp_sink.clear()
    due = start + timedelta(hours=2, seconds=1)
    monkeypatch.setattr(clock, "now", lambda: due)
    first = Delivery.objects.filter(subscription=bob).earliest("created_at")

    clean_smtp_sink.fail_next(1, code=451)
    assert tasks.send(str(first.pk)) == "retrying"
    waiting = Delivery.objects.filter(subscription=bob)
    # One backoff for the group: they come due together again and stay one digest.
    assert set(waiting.values_list("status", flat=True)) == {Delivery.Status.RETRYING}
    (retry_at,) = set(waiting.values_list("not_before", flat=True))
    assert retry_at > due

    monkeypatch.setattr(clock, "now", lambda: retry_at + timedelta(seconds=1))
    last = waiting.latest("created_at")
    assert tasks.send(str(last.pk)) == "sent"
    assert [m.subject for m in clean_smtp_sink.wait_for(1)] == ["Digest: 3 messages"]
    assert set(waiting.values_list("status", "attempts")) == {(Delivery.Status.SENT, 2)}


def test_mail_arriving_after_the_digest_went_waits_for_the_next_day(alice, clean_smtp_sink, digest_setup,
                                                                     monkeypatch):
    start, bob = digest_setup
    mail_three(alice)
    monkeypatch.setattr(clock, "now", lambda: start + timedelta(hours=2, seconds=1))
    assert tasks.send(str(Delivery.objects.filter(subscription=bob).first().pk)) == "sent"

    late = ingest(alice, eml(subject="Late report", message_id="<late@example.test>"))
    run_stages(late)
    delivery = Delivery.objects.get(message=late, subscription=bob)
    assert delivery.status == Delivery.Status.SCHEDULED
    assert delivery.not_before == start + timedelta(days=1, hours=2)
