"""Retention (pipeline/retention.py, `manage.py purge`): old, finished messages go with their files;
the audit trail keeps a summary line, and a tombstone keeps their identity from coming back."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command

from pipeline import clock, tasks
from imap.models import Account
from pipeline.ingest import ingest_raw, store_raw
from pipeline.models import Attachment, Delivery, Event, Message, PurgedIdentity
from pipeline.retention import purge
from tests.builders import (GENERIC_PAYLOAD, eml, ingest, make_channel, post_signed, post_telegram, route_everything,
                            smtp_service, subscribe, telegram_update)

pytestmark = pytest.mark.django_db


def old_message(owner, raw=None, days=31) -> Message:
    return finished_and_aged(ingest(owner, raw or eml(attachment=("old.pdf", b"old numbers"))), days)


def finished_and_aged(message, days=31) -> Message:
    tasks.standardize(str(message.pk))
    tasks.distribute(str(message.pk))
    Message.objects.filter(pk=message.pk).update(received_at=clock.now() - timedelta(days=days))
    message.refresh_from_db()
    return message


def test_an_old_finished_message_is_removed_with_its_files_and_leaves_a_summary(alice):
    message = old_message(alice)
    [attachment] = Attachment.objects.filter(message=message)
    files = [attachment.file.name, message.raw.name]
    assert purge() == {"messages": 1, "attachments": 1, "raw_files": 1, "bytes": message.size}
    assert not Message.objects.filter(pk=message.pk).exists()
    assert not any(default_storage.exists(name) for name in files)
    events = Event.objects.filter(owner=alice).order_by("at", "id")
    assert [e.kind for e in events][-1] == "purged"
    assert all(e.message_id is None and e.summary == "dora@example.test: Quarterly numbers" for e in events)


def test_a_message_with_a_pending_delivery_is_kept(alice, clean_smtp_sink):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    subscribe(service, "bob", "bob@example.test")
    message = old_message(alice)
    assert Delivery.objects.get(message=message).status == Delivery.Status.SCHEDULED
    assert purge()["messages"] == 0
    Delivery.objects.filter(message=message).update(status=Delivery.Status.SENT)
    assert purge()["messages"] == 1


def test_a_delivery_retried_after_the_purge_picked_its_message_keeps_the_message(alice, clean_smtp_sink):
    from pipeline import retention, sending

    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    subscribe(service, "bob", "bob@example.test")
    message = old_message(alice)
    Delivery.objects.filter(message=message).update(status=Delivery.Status.FAILED)
    selected = list(retention.expired())
    assert [m.pk for m in selected] == [message.pk]
    # An admin's retry commits between the purge's selection and its delete.
    assert sending.retry_deliveries(Delivery.objects.filter(message=message)) == 1
    assert purge(selected=selected)["messages"] == 0
    assert Message.objects.filter(pk=message.pk).exists()
    assert Delivery.objects.get(message=message).status == Delivery.Status.SCHEDULED
    assert not PurgedIdentity.objects.exists()
    assert default_storage.exists(message.raw.name)


def test_a_dead_message_retried_after_the_purge_picked_it_is_kept(alice):
    from pipeline import retention, sending

    message = old_message(alice)
    Message.objects.filter(pk=message.pk).update(status=Message.Status.DEAD)
    selected = list(retention.expired())
    assert sending.retry_messages(Message.objects.filter(pk=message.pk)) == 1
    assert purge(selected=selected)["messages"] == 0
    assert Message.objects.get(pk=message.pk).status == Message.Status.RECEIVED


def test_recent_messages_are_kept(alice):
    old_message(alice, days=29)
    assert purge()["messages"] == 0


def test_a_raw_file_shared_with_a_kept_message_stays(alice):
    raw = eml(subject="Same bytes")
    old = old_message(alice, raw=raw)
    twin = ingest(alice, raw)
    assert twin.raw.name == old.raw.name
    assert purge()["raw_files"] == 0
    assert default_storage.exists(twin.raw.name)


def test_purge_dry_run_only_counts(alice):
    message = old_message(alice)
    out = StringIO()
    call_command("purge", "--dry-run", stdout=out)
    assert out.getvalue().startswith("Would remove 1 messages, 1 attachments")
    assert Message.objects.filter(pk=message.pk).exists()
    call_command("purge", stdout=out)
    assert not Message.objects.filter(pk=message.pk).exists()


# --- tombstones: a purged identity never enters the pipeline again --------------------------------

@pytest.fixture
def account(alice):
    return Account.objects.create(owner=alice, display_name="A", email="a@example.test", host="127.0.0.1",
                                  port=143, security=Account.Security.NONE, username="a")


def import_mail(account, path) -> dict:
    out = StringIO()
    call_command("import_mail", "--account", str(account.pk), str(path), stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_a_purged_import_leaves_a_tombstone_and_importing_the_file_again_stores_nothing(account, tmp_path):
    raw = eml(subject="Imported once", message_id="<once@example.test>")
    (tmp_path / "once.eml").write_bytes(raw)
    assert import_mail(account, tmp_path / "once.eml")["created"] == 1
    message = finished_and_aged(Message.objects.get(account=account))
    assert purge()["messages"] == 1
    [tombstone] = PurgedIdentity.objects.all()
    assert (tombstone.account, tombstone.channel, tombstone.identity) == (account, None, message.identity)

    again = import_mail(account, tmp_path / "once.eml")
    assert (again["created"], again["errors"]) == (0, 0)
    assert not Message.objects.filter(account=account).exists()
    assert not default_storage.exists(message.raw.name)  # not even the raw file is written again


def test_a_purged_identity_is_stored_again_nowhere_but_elsewhere_as_usual(account, alice, bob):
    raw = eml(subject="Scoped")
    message, _ = ingest_raw(owner=alice, raw=raw, identity="mid:scoped", source="import", account=account)
    finished_and_aged(message)
    purge()
    assert ingest_raw(owner=alice, raw=raw, identity="mid:scoped", source="import", account=account) == (None, False)
    other = Account.objects.create(owner=bob, display_name="B", email="b@example.test", host="127.0.0.1",
                                   port=143, security=Account.Security.NONE, username="b")
    _, created = ingest_raw(owner=bob, raw=raw, identity="mid:scoped", source="import", account=other)
    assert created


def test_a_telegram_update_delivered_again_after_its_purge_stores_nothing(client, alice):
    channel = make_channel(alice, "telegram", {"secret_token": "tg-secret_1"}, token="tg-abc")
    assert post_telegram(client, telegram_update(update_id=7001)).status_code == 200
    finished_and_aged(Message.objects.get(channel=channel))
    assert purge()["messages"] == 1
    assert PurgedIdentity.objects.filter(channel=channel, identity="tg:7001").exists()

    assert post_telegram(client, telegram_update(update_id=7001)).status_code == 200
    assert not Message.objects.filter(channel=channel).exists()
    assert post_telegram(client, telegram_update(update_id=7002)).status_code == 200  # a new update still arrives
    assert Message.objects.filter(channel=channel, identity="tg:7002").exists()


def test_a_signed_json_event_sent_again_after_its_purge_is_accepted_and_stores_nothing(client, alice):
    channel = make_channel(alice, "generic", {"current": "new-secret"}, token="gen-abc")
    assert post_signed(client, GENERIC_PAYLOAD).status_code == 202
    finished_and_aged(Message.objects.get(channel=channel))
    assert purge()["messages"] == 1

    # A fresh signature (not a replay) for the same event id: accepted, so the sender stops
    # retrying, and nothing is stored or relayed again.
    response = post_signed(client, GENERIC_PAYLOAD, timestamp=str(int(clock.now().timestamp()) + 1))
    assert response.status_code == 202
    assert response.json() == {"ok": True, "message_id": None, "duplicate": True}
    assert not Message.objects.filter(channel=channel).exists()


def test_purge_dry_run_writes_no_tombstone(account, alice):
    message, _ = ingest_raw(owner=alice, raw=eml(), identity="mid:dry", source="import", account=account)
    finished_and_aged(message)
    call_command("purge", "--dry-run", stdout=StringIO())
    assert not PurgedIdentity.objects.exists()
    assert Message.objects.filter(pk=message.pk).exists()


def test_a_message_without_account_or_channel_leaves_no_tombstone(alice):
    old_message(alice)
    assert purge()["messages"] == 1
    assert not PurgedIdentity.objects.exists()


def test_purging_an_identity_twice_keeps_one_tombstone_with_the_later_date(account, alice):
    raw = eml(subject="Twice")
    first, _ = ingest_raw(owner=alice, raw=raw, identity="mid:twice", source="import", account=account)
    finished_and_aged(first)
    purge()
    # A message stored before tombstones existed (or by a path that skipped them) is purged again.
    second = Message.objects.create(owner=alice, source="import", account=account, identity="mid:twice",
                                    status=Message.Status.DISTRIBUTED, raw=store_raw(raw)[0])
    Message.objects.filter(pk=second.pk).update(received_at=clock.now() - timedelta(days=40))
    later = clock.now() + timedelta(days=1)
    assert purge(now=later)["messages"] == 1
    [tombstone] = PurgedIdentity.objects.filter(account=account)
    assert tombstone.purged_at == later
