"""Every stage is visible: the timeline starts when the headers are fetched, and the inbox hears of
a message as soon as its headers are known, before its body is downloaded or standardized."""

import pytest

from pipeline.ingest import ingest_raw
from pipeline.models import Event, Message
from tests.builders import dovecot_account, raw_message, sync


@pytest.fixture
def published(monkeypatch):
    sent = []
    monkeypatch.setattr("mailgate.realtime.publish", lambda who, kind, data: sent.append((who, kind, data)))
    return sent


@pytest.mark.django_db
def test_a_sync_announces_new_mail_at_phase_one_and_records_fetched_and_received(
        alice, bob, dovecot, mail_user, published):
    for n in range(3):
        dovecot.append(mail_user.name, "INBOX", raw_message(n))
    account = dovecot_account(alice, dovecot, mail_user)
    account.members.add(bob)
    sync(account)
    messages = Message.objects.filter(account=account)
    ids = sorted(str(pk) for pk in messages.values_list("pk", flat=True))
    kinds = [kind for _, kind, _ in published]
    # Headers first (phase 1), then the bodies (phase 2): the new-mail hint comes before the bodies.
    first_new = next(i for i, (_, kind, data) in enumerate(published) if kind == "message.new")
    bodies = next(i for i, (_, kind, data) in enumerate(published) if kind == "message.updated" and data.get("ids"))
    assert first_new < bodies
    assert sorted(published[first_new][2]["ids"]) == ids and published[first_new][0] == [alice.pk, bob.pk]
    assert sorted(published[bodies][2]["ids"]) == ids
    progress = [data for _, kind, data in published if kind == "sync.progress" and data["folder"] == "INBOX"]
    assert progress[-1]["done"] == progress[-1]["total"] == 3 and "sync.progress" in kinds
    for message in messages:
        assert list(Event.objects.filter(message=message).values_list("kind", flat=True)) == ["fetched", "received"]
    fetched = Event.objects.filter(kind="fetched").first()
    assert fetched.detail.startswith("headers fetched from INBOX, UID ") and fetched.summary.startswith("sender")


@pytest.mark.django_db
def test_a_message_that_arrives_whole_is_received_and_announced_at_once(alice, published):
    raw = b"From: Dora <dora@example.test>\r\nSubject: Whole\r\n\r\nHi\r\n"
    message, created = ingest_raw(owner=alice, raw=raw, identity="whole-1", source="import")
    assert created
    assert [(kind, data["id"]) for _, kind, data in published] == [("message.new", str(message.pk))]
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.detail) == ("received", f"raw stored, {len(raw)} bytes (import)")
