"""pipeline.ingest.ingest_raw_many: a batch of messages (an import's, a backlog's) is stored exactly
as ingest_raw stores each one, in one transaction and a few statements, and nothing twice."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from imap.models import Folder
from mailgate import realtime, storage
from pipeline import ingest
from pipeline.models import Event, Message, PurgedIdentity
from tests.builders import account_row, eml, statements, task_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(alice):
    return account_row(alice)


@pytest.fixture
def folder(account):
    return Folder.objects.create(account=account, name="Imported", present=False, selectable=False)


def items(*numbers, prefix="m"):
    return [(eml(subject=f"Batch {n}"), f"{prefix}-{n}", {"subject": f"Batch {n}"}) for n in numbers]


def store(alice, account, folder, batch):
    return ingest.ingest_raw_many(owner=alice, items=batch, source=Message.Source.IMPORT, account=account,
                                  folder=folder)


def test_a_batch_is_stored_as_ingest_raw_stores_each_message(alice, account, folder, settings,
                                                               django_capture_on_commit_callbacks):
    settings.MAILGATE_STAGE_BATCH = 50
    single, created = ingest.ingest_raw(owner=alice, raw=eml(subject="Alone"), identity="alone",
                                        source=Message.Source.IMPORT, account=account, folder=folder,
                                        subject="Alone")
    assert created
    with django_capture_on_commit_callbacks() as callbacks:
        results = store(alice, account, folder, items(1, 2, 3))
    assert [created for _, created in results] == [True, True, True]
    stored = [message for message, _ in results]
    for message, (raw, identity, _) in zip(stored, items(1, 2, 3)):
        row = Message.objects.get(pk=message.pk)
        assert (row.identity, row.status, row.account_id, row.folder_id, row.source, row.size) == (
            identity, Message.Status.RECEIVED, account.pk, folder.pk, "import", len(raw))
        assert storage.read_bytes(row.raw.name) == raw
    received = Event.objects.filter(kind=Event.Kind.RECEIVED)
    assert {e.message_id: e.detail for e in received} == {
        m.pk: f"raw stored, {m.size} bytes (import)" for m in [single, *stored]}
    # One standardize task for the batch (a stage batch), after the one of the message alone.
    assert [str(m.pk) for m in stored] in task_ids("standardize")
    # A live message.new hint for each, sent at the batch's commit (numbered together there).
    hints = [c for c in callbacks if isinstance(c, realtime._Hint)]
    assert [(h.event_type, h.data["id"], h.user_ids) for h in hints] == [
        ("message.new", str(m.pk), [alice.pk]) for m in stored]


def test_known_purged_and_repeated_identities_are_answered_as_ingest_raw_answers_them(
        alice, account, folder):
    known, _ = store(alice, account, folder, items(1))[0]
    PurgedIdentity.objects.create(account=account, identity="m-2", purged_at=timezone.now())
    results = store(alice, account, folder, items(1, 2, 3) + items(3))
    assert results[0] == (known, False)
    assert results[1] == (None, False)
    assert results[2][1] is True and results[3] == (results[2][0], False)
    assert Message.objects.filter(account=account).count() == 2
    assert Event.objects.filter(kind=Event.Kind.RECEIVED).count() == 2


def test_a_batch_costs_the_same_few_statements_whatever_its_size(alice, account, folder, settings):
    settings.MAILGATE_STAGE_BATCH = 50
    with CaptureQueriesContext(connection) as few:
        store(alice, account, folder, items(*range(2), prefix="few"))
    with CaptureQueriesContext(connection) as many:
        store(alice, account, folder, items(*range(40), prefix="many"))
    # The known and purged identities, the messages, their audit rows, the viewers of their
    # hints, their task; the hints' numbering runs at the commit, outside the test's transaction.
    # SQLite's 999 parameters split the INSERT of 40 messages (~36 columns each) in two.
    assert len(statements(few)) <= 6
    assert len(statements(many)) <= len(statements(few)) + (1 if connection.vendor == "sqlite" else 0)


def test_a_batch_that_loses_a_race_for_an_identity_stores_each_message_once(alice, account, folder, monkeypatch):
    # Another ingest stores m-2 between the batch's look-up and its INSERT (the storage writes
    # come in between): the batch rolls back and settles each message as ingest_raw does.
    write_many_once = storage.write_many_once

    def racing(pairs, *args):
        write_many_once(pairs, *args)
        if not Message.objects.filter(identity="m-2").exists():
            ingest.ingest_raw(owner=alice, raw=eml(subject="Batch 2"), identity="m-2",
                              source=Message.Source.IMPORT, account=account, folder=folder)

    monkeypatch.setattr(storage, "write_many_once", racing)
    results = store(alice, account, folder, items(1, 2, 3))
    assert [created for _, created in results] == [True, False, True]
    assert sorted(Message.objects.values_list("identity", flat=True)) == ["m-1", "m-2", "m-3"]
    assert Event.objects.filter(kind=Event.Kind.RECEIVED).count() == 3
