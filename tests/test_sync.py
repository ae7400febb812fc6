"""Batch sync against the real Dovecot: completeness, incrementality, \\Seen untouched, UIDVALIDITY
changes, flags and expunges, crash safety, TLS, coalesced task requests, account state, slots."""

from __future__ import annotations

import hashlib
import imaplib
import os
import signal
import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_q.models import OrmQ

from imap import account_state, errors, queue, slots, tasks, utf7
from imap.accounts import create_account
from imap.models import Account, ConnectionSlot, Folder, MessageLocation
from imap.sync import sync_account_now
from pipeline import ingest, queue as pipeline_queue, retention
from pipeline.models import Delivery, Message
from tests.builders import (dovecot_account, fill_maildir, raw_message, route_everything, run_stages,
                            smtp_service, subscribe, sync)
from tests.servers import procs

UNICODE_FOLDER = "Entwürfe & 📬"


# --------------------------------------------------------------------------- helpers

def assert_stored_exactly_once(account, expected_identities: int):
    assert Message.objects.filter(account=account).count() == expected_identities
    assert Message.objects.filter(account=account).exclude(status=Message.Status.RECEIVED).count() == 0
    for message in Message.objects.filter(account=account).only("raw", "raw_sha256"):
        with default_storage.open(message.raw.name, "rb") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == message.raw_sha256


@pytest.fixture
def imap_commands(monkeypatch):
    """Every IMAP command this process sends, as (name, args) - to prove what sync did not ask for."""
    sent = []
    original = imaplib.IMAP4._command

    def recording(self, name, *args):
        sent.append((name, " ".join(a.decode() if isinstance(a, bytes) else str(a) for a in args)))
        return original(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "_command", recording)
    return sent


def body_fetches(sent) -> list[str]:
    return [args for name, args in sent if name == "UID" and "BODY.PEEK[]" in args]


def fetched_body_uids(sent) -> list[int]:
    """UIDs named in the UID sets of body FETCH commands ("FETCH 3:5,9 (UID BODY.PEEK[])")."""
    uids = []
    for args in body_fetches(sent):
        for part in args.split()[1].split(","):
            low, _, high = part.partition(":")
            uids.extend(range(int(low), int(high or low) + 1))
    return uids


# --------------------------------------------------------------------------- completeness


@pytest.mark.slow
@pytest.mark.django_db
def test_a_5000_message_mailbox_syncs_completely_and_then_only_new_bodies_are_fetched(
        alice, dovecot, mail_user, imap_commands):
    layout = {"INBOX": 2000, "Archive": 2000, UNICODE_FOLDER: 1000}
    n = 0
    for folder, count in layout.items():
        # Every third message is read: sync must leave exactly these \Seen.
        fill_maildir(dovecot, mail_user, folder,
                     [(raw_message(n + i, folder), "S" if (n + i) % 3 == 0 else "") for i in range(count)])
        n += count
    seen_before = {f: dovecot.flags(mail_user.name, f) for f in layout}
    account = dovecot_account(alice, dovecot, mail_user)

    first = sync(account)
    assert (first.stats.new, first.stats.bodies) == (5000, 5000)
    assert_stored_exactly_once(account, 5000)
    assert MessageLocation.objects.filter(account=account, expunged_at__isnull=True).count() == 5000
    assert {f: dovecot.flags(mail_user.name, f) for f in layout} == seen_before
    read = sum("\\Seen" in flags for flags in Message.objects.filter(account=account).values_list("flags", flat=True))
    assert read == sum(1 for i in range(5000) if i % 3 == 0)
    inbox = Folder.objects.get(account=account, name="INBOX")
    assert inbox.highest_uid == 2000 and inbox.uidvalidity and inbox.highestmodseq
    assert Folder.objects.get(account=account, name=UNICODE_FOLDER).highest_uid == 1000

    imap_commands.clear()
    second = sync(account)
    assert body_fetches(imap_commands) == []
    assert (second.stats.new, second.stats.bodies, second.stats.bytes) == (0, 0, 0)

    for i in range(10):
        dovecot.append(mail_user.name, "Archive" if i % 2 else "INBOX", raw_message(10_000 + i, "new"))
    imap_commands.clear()
    third = sync(account)
    assert (third.stats.new, third.stats.bodies) == (10, 10)
    # Five new UIDs in each of INBOX and Archive, and nothing else.
    assert sorted(fetched_body_uids(imap_commands)) == sorted(list(range(2001, 2006)) * 2)
    assert_stored_exactly_once(account, 5010)


@pytest.mark.django_db
def test_the_same_message_in_two_folders_is_one_message_with_two_locations(alice, dovecot, mail_user):
    raw = raw_message(1)
    dovecot.append(mail_user.name, "INBOX", raw)
    dovecot.append(mail_user.name, "Archive", raw, flags=("\\Flagged",))
    account = dovecot_account(alice, dovecot, mail_user)
    report = sync(account)
    message = Message.objects.get(account=account)
    assert report.stats.bodies == 1
    assert sorted(message.locations.values_list("folder__name", flat=True)) == ["Archive", "INBOX"]
    assert message.flags == ["\\Flagged"]
    assert message.subject == "Nr 1 ü" and message.sender_address == "sender1@example.test"


@pytest.mark.django_db
def test_messages_over_the_size_limit_keep_metadata_and_are_not_downloaded(
        alice, dovecot, mail_user, settings, imap_commands):
    settings.MAILGATE_MAX_MESSAGE_BYTES = 5000
    dovecot.append(mail_user.name, "INBOX", raw_message(1, size=100))
    dovecot.append(mail_user.name, "INBOX", raw_message(2, size=20_000))
    account = dovecot_account(alice, dovecot, mail_user)
    report = sync(account)
    big = Message.objects.get(account=account, message_id__contains="<2.")
    assert big.status == Message.Status.TOO_LARGE and not big.raw and big.size > 5000
    assert big.subject == "Nr 2 ü"
    assert (report.stats.skipped_large, report.stats.bodies) == (1, 1)
    assert fetched_body_uids(imap_commands) == [1]


# --------------------------------------------------------------------------- UIDVALIDITY


@pytest.mark.django_db
def test_a_recreated_folder_gives_no_duplicates_loses_nothing_and_downloads_nothing_again(
        alice, dovecot, mail_user, imap_commands):
    raws = [raw_message(i, "Projects") for i in range(20)]
    for raw in raws:
        dovecot.append(mail_user.name, "Projects", raw)
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)
    old_uidvalidity = Folder.objects.get(account=account, name="Projects").uidvalidity
    ids_before = set(Message.objects.filter(account=account).values_list("pk", flat=True))

    dovecot.delete_folder(mail_user.name, "Projects")
    for raw in raws[:19]:  # one message did not come back
        dovecot.append(mail_user.name, "Projects", raw)
    imap_commands.clear()
    report = sync(account)

    folder = Folder.objects.get(account=account, name="Projects")
    assert folder.uidvalidity != old_uidvalidity
    assert set(Message.objects.filter(account=account).values_list("pk", flat=True)) == ids_before
    assert body_fetches(imap_commands) == []
    live = MessageLocation.objects.filter(folder=folder, expunged_at__isnull=True)
    assert live.count() == 19 and set(live.values_list("uidvalidity", flat=True)) == {folder.uidvalidity}
    assert MessageLocation.objects.filter(folder=folder, uidvalidity=old_uidvalidity,
                                          expunged_at__isnull=False).count() == 20
    assert (report.stats.rescans, report.stats.expunged) == (1, 1)
    assert_stored_exactly_once(account, 20)


@pytest.mark.django_db
def test_a_purged_message_in_a_recreated_folder_is_neither_stored_nor_relayed_again(
        alice, dovecot, mail_user, clean_smtp_sink, imap_commands):
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    subscribe(service, "bob", "bob@example.test")
    old, kept, new = (raw_message(i, "Projects") for i in (1, 2, 3))
    dovecot.create_folder(mail_user.name, "Projects")
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)  # connected while the folder is empty: what arrives next is new mail
    for raw in (old, kept):
        dovecot.append(mail_user.name, "Projects", raw)
    sync(account)
    for message in Message.objects.filter(account=account):
        run_stages(message)
    assert len(clean_smtp_sink.wait_for(2)) == 2
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}
    purged = Message.objects.get(account=account, subject="Nr 1 ü")
    Message.objects.filter(pk=purged.pk).update(received_at=timezone.now() - timedelta(days=31))
    assert retention.purge()["messages"] == 1

    dovecot.delete_folder(mail_user.name, "Projects")
    for raw in (old, kept, new):
        dovecot.append(mail_user.name, "Projects", raw)
    report = sync(account)

    assert (report.stats.rescans, report.stats.skipped_purged) == (1, 1)
    assert sorted(Message.objects.filter(account=account).values_list("subject", flat=True)) == ["Nr 2 ü", "Nr 3 ü"]
    assert not Message.objects.filter(account=account, identity=purged.identity).exists()
    for message in Message.objects.filter(account=account, status=Message.Status.RECEIVED):
        run_stages(message)
    assert Delivery.objects.count() == 2  # the kept message's and the new one's: none for the purged
    relayed = clean_smtp_sink.wait_for(3)
    assert [m.rcpt_tos for m in relayed] == [["bob@example.test"]] * 3
    assert sorted(n for m in relayed for n in ("Nr 1", "Nr 2", "Nr 3") if n in str(m.message["Subject"])) == [
        "Nr 1", "Nr 2", "Nr 3"]  # each relayed exactly once

    folder = Folder.objects.get(account=account, name="Projects")
    assert folder.highest_uid == 3  # moved past the purged UID: the next sync does not look at it again
    imap_commands.clear()
    assert sync(account).stats.skipped_purged == 0
    assert not [args for name, args in imap_commands if name == "UID" and "BODY.PEEK[HEADER]" in args]


# --------------------------------------------------------------------------- flags and expunges


def _store(dovecot, user, folder, uid, op, flags, expunge=False):
    conn = dovecot.imap(user)
    try:
        conn.select(utf7.quote(folder))
        conn.uid("STORE", str(uid), op, flags)
        if expunge:
            conn.uid("EXPUNGE", str(uid))
    finally:
        conn.logout()


@pytest.mark.parametrize("condstore", [True, False], ids=["condstore", "flag-window"])
@pytest.mark.django_db
def test_flag_changes_and_expunges_reach_the_messages_and_are_published(
        alice, dovecot, mail_user, monkeypatch, condstore):
    uids = [dovecot.append(mail_user.name, "INBOX", raw_message(i)) for i in range(5)]
    if not condstore:
        from imap import connection

        real = connection.capabilities
        monkeypatch.setattr(connection, "capabilities", lambda client: real(client) - {"CONDSTORE", "QRESYNC"})
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)
    published = []
    monkeypatch.setattr("mailgate.realtime.publish", lambda who, kind, data: published.append((who, kind, data)))

    _store(dovecot, mail_user.name, "INBOX", uids[1], "+FLAGS", "(\\Seen \\Flagged)")
    _store(dovecot, mail_user.name, "INBOX", uids[3], "+FLAGS", "(\\Deleted)", expunge=True)
    report = sync(account)

    assert (report.stats.updated, report.stats.expunged) == (1, 1)
    changed = MessageLocation.objects.get(account=account, uid=uids[1]).message
    assert changed.flags == ["\\Flagged", "\\Seen"]
    gone = MessageLocation.objects.get(account=account, uid=uids[3])
    assert gone.expunged_at is not None
    assert Message.objects.filter(pk=gone.message_id).exists()  # the message stays
    updates = [d for _, kind, d in published if kind == "message.updated"]
    assert {d["id"] for d in updates} >= {str(changed.pk)}
    assert next(d for d in updates if d["id"] == str(changed.pk))["flags"] == ["\\Flagged", "\\Seen"]

    again = sync(account)
    assert (again.stats.updated, again.stats.expunged, again.stats.new) == (0, 0, 0)


@pytest.mark.django_db
def test_a_message_expunged_before_its_body_came_is_gone_until_it_turns_up_again(
        alice, dovecot, mail_user, monkeypatch, settings):
    uid = dovecot.append(mail_user.name, "INBOX", raw_message(1))
    account = dovecot_account(alice, dovecot, mail_user)
    with monkeypatch.context() as patched:  # phase 1 only, as when the sync is cut off in between
        patched.setattr("imap.sync.FolderSync._fetch_bodies", lambda self: None)
        sync(account)
    message = Message.objects.get(account=account)
    assert message.status == Message.Status.HEADERS

    _store(dovecot, mail_user.name, "INBOX", uid, "+FLAGS", "(\\Deleted)", expunge=True)
    assert sync(account).stats.expunged == 1
    message.refresh_from_db()
    # Not "body pending" for ever: final, so retention purges it like any other message.
    assert message.status == Message.Status.GONE and not message.raw
    later = timezone.now() + timedelta(days=settings.MAILGATE_RETENTION_DAYS + 1)
    assert list(retention.expired(now=later).values_list("pk", flat=True)) == [message.pk]

    # The user restores it into another folder before then: the next sync downloads it, once.
    dovecot.append(mail_user.name, "Archive", raw_message(1))
    sync(account)
    message.refresh_from_db()
    assert message.status == Message.Status.RECEIVED and message.raw
    assert_stored_exactly_once(account, 1)


# --------------------------------------------------------------------------- crash safety


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_mid_batch_resumes_without_duplicates_or_gaps(alice, dovecot, mail_user):
    total = 1000
    fill_maildir(dovecot, mail_user, "INBOX", [(raw_message(i, size=3000), "") for i in range(total)])
    account = dovecot_account(alice, dovecot, mail_user)
    proc = procs.start(["manage.py", "sync", "--account", str(account.pk)], "sync-killed",
                       MAILGATE_SYNC_BATCH_SIZE="25")
    try:
        deadline = time.monotonic() + 60
        received = Message.objects.filter(account=account, status=Message.Status.RECEIVED)
        while received.count() < 50:
            assert proc.poll() is None, procs.log_text("sync-killed")
            assert time.monotonic() < deadline, "sync made no progress"
            time.sleep(0.02)  # polling the shared database with a deadline
    finally:
        procs.stop(proc, signal.SIGKILL)
    stored_when_killed = received.count()
    assert 0 < stored_when_killed < total, "the kill did not land mid-sync"

    report = sync(account)
    assert report.stats.bodies == total - stored_when_killed  # nothing stored is fetched again
    assert_stored_exactly_once(account, total)
    assert MessageLocation.objects.filter(account=account).count() == total
    assert sorted(MessageLocation.objects.filter(account=account).values_list("uid", flat=True)) == \
        list(range(1, total + 1))


@pytest.mark.django_db
def test_a_body_batch_advances_only_messages_still_waiting_and_queues_each_once(
        alice, django_capture_on_commit_callbacks):
    def waiting(n, status=Message.Status.HEADERS):
        return Message.objects.create(owner=alice, source=Message.Source.IMPORT, identity=f"batch-{n}", status=status)

    first, second, done = waiting(1), waiting(2), waiting(3, Message.Status.RECEIVED)
    raws = {m.pk: raw_message(n, "batch") for n, m in enumerate((first, second, done))}
    pairs = [(first, raws[first.pk]), (second, raws[second.pk]), (done, raws[done.pk]), (first, b"listed twice")]

    with django_capture_on_commit_callbacks(execute=True):
        assert ingest.attach_raw_batch(pairs) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert ingest.attach_raw_batch(pairs) == 0  # a rerun changes and queues nothing

    for message in (first, second):
        message.refresh_from_db()
        assert message.status == Message.Status.RECEIVED
        assert ingest.read_raw(message) == raws[message.pk]
        assert (message.size, message.raw_sha256) == (len(raws[message.pk]),
                                                      hashlib.sha256(raws[message.pk]).hexdigest())
    done.refresh_from_db()
    assert (done.status, done.raw.name) == (Message.Status.RECEIVED, "")
    # Both in ONE standardize task (a batch, pipeline.queue.Stage.batch), in pk order.
    [queued] = [task.task for task in OrmQ.objects.all()]
    low, high = sorted([str(first.pk), str(second.pk)])
    assert queued["name"] == f"standardize:{low}+1" and queued["args"] == ([low, high],)

    # The queued task is the one pipeline.queue.enqueue_many would have queued for those messages.
    OrmQ.objects.all().delete()
    pipeline_queue.enqueue_many(pipeline_queue.Stage.STANDARDIZE, [low, high], pipeline_queue.Lane.LIVE)
    single = OrmQ.objects.get().task
    assert sorted(queued) == sorted(single)
    assert {k: v for k, v in queued.items() if k not in ("id", "started")} == \
        {k: v for k, v in single.items() if k not in ("id", "started")}
    assert not [p for p in default_storage.listdir("raw")[0]
                for f in default_storage.listdir(f"raw/{p}")[1] if not f.endswith(".eml")]


# --------------------------------------------------------------------------- TLS


@pytest.mark.django_db
def test_sync_over_tls_verifies_the_server_certificate(alice, dovecot, mail_user, settings):
    settings.MAILGATE_IMAP_CAFILE = dovecot.cafile
    dovecot.append(mail_user.name, "INBOX", raw_message(1))
    account = create_account(owner=alice, email="t@example.test", host="127.0.0.1", port=dovecot.tls_port,
                             security=Account.Security.SSL, username=mail_user.name, password=mail_user.password)
    report = sync(account)
    assert report.stats.bodies == 1
    account.refresh_from_db()
    assert account.state == Account.State.OK

    settings.MAILGATE_IMAP_CAFILE = ""  # the system CAs do not know our test CA
    failed = sync_account_now(account, ignore_backoff=True)
    assert failed.errors and "TLS" in failed.errors[0]


# --------------------------------------------------------------------------- tasks


@pytest.mark.django_db
def test_a_burst_of_sync_requests_queues_one_task_per_folder(
        alice, dovecot, mail_user, django_capture_on_commit_callbacks, django_assert_max_num_queries):
    account = dovecot_account(alice, dovecot, mail_user)
    Folder.objects.create(account=account, name="INBOX")
    with django_capture_on_commit_callbacks(execute=True):
        with django_assert_max_num_queries(3):
            assert queue.enqueue_folder_sync(account.pk, "INBOX", flags_only=True, reason="EXISTS")
        for _ in range(20):
            with django_assert_max_num_queries(3):
                assert not queue.enqueue_folder_sync(account.pk, "INBOX", reason="EXISTS")
        queue.enqueue_folder_sync(account.pk, "Archive", reason="new folder")
    assert sorted(task.name() for task in OrmQ.objects.all()) == [
        f"sync:{account.pk}:Archive", f"sync:{account.pk}:INBOX"]
    # The flags-only request was upgraded by the later full ones.
    assert Folder.objects.get(account=account, name="INBOX").sync_pending == Folder.SyncPending.FULL


@pytest.mark.django_db
def test_a_request_during_a_running_sync_queues_one_more(alice, dovecot, mail_user,
                                                         django_capture_on_commit_callbacks):
    dovecot.append(mail_user.name, "INBOX", raw_message(1))
    account = dovecot_account(alice, dovecot, mail_user)
    Folder.objects.create(account=account, name="INBOX")
    with django_capture_on_commit_callbacks(execute=True):
        queue.enqueue_folder_sync(account.pk, "INBOX")
    result = tasks.sync_folder(account.pk, "INBOX")  # what the worker runs
    assert result["new"] == 1 and Folder.objects.get(account=account, name="INBOX").sync_pending == ""
    with django_capture_on_commit_callbacks(execute=True):
        assert queue.enqueue_folder_sync(account.pk, "INBOX")
    # (The sync's standardize task for the new message is queued too, inside its transaction.)
    assert [task.name() for task in OrmQ.objects.all()].count(f"sync:{account.pk}:INBOX") == 2


@pytest.mark.django_db
def test_sync_account_queues_every_folder_and_the_schedule_exists(alice, dovecot, mail_user,
                                                                  django_capture_on_commit_callbacks):
    from django_q.models import Schedule

    dovecot.append(mail_user.name, "INBOX", raw_message(1))
    dovecot.append(mail_user.name, "Archive", raw_message(2))
    account = dovecot_account(alice, dovecot, mail_user, folders_exclude=["Trash"])
    dovecot.create_folder(mail_user.name, "Trash")
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.sync_account(account.pk)
    assert sorted(result["queued"]) == ["Archive", "INBOX"]
    tasks.ensure_schedules()
    tasks.ensure_schedules()
    schedule = Schedule.objects.get(name=tasks.SCHEDULE_NAME)
    assert schedule.func == "imap.tasks.sync_all_accounts" and schedule.minutes == 5


# --------------------------------------------------------------------------- account state, slots


# A non-ASCII password goes out with AUTHENTICATE PLAIN (LOGIN is ASCII only), whose refusal
# imaplib reports differently: it must stop the account all the same.
@pytest.mark.parametrize("password", ["wrong", "fälsch-pässwörd"], ids=["ascii", "non-ascii"])
@pytest.mark.django_db
def test_a_wrong_password_stops_after_the_limit_and_says_why(alice, dovecot, mail_user, settings, password):
    settings.MAILGATE_AUTH_FAILURE_LIMIT = 2
    account = dovecot_account(alice, dovecot, mail_user)
    account.set_password(password)
    account.save()
    for _ in range(2):
        report = sync_account_now(account, ignore_backoff=True)
        assert report.errors and "authentication failed" in report.errors[0]
    account.refresh_from_db()
    assert account.state == Account.State.AUTH_FAILED
    assert "authentication failed" in account.last_error and "stopped after 2" in account.last_error
    blocked = sync_account_now(account, ignore_backoff=True)
    assert "stopped after 2" in blocked.errors[0]
    assert account_state.blocked_reason(account)


@pytest.mark.django_db
def test_network_errors_back_off_exponentially_and_success_resets(alice, dovecot, mail_user):
    account = dovecot_account(alice, dovecot, mail_user)
    account_state.record_failure(account, errors.ConnectionRefused("connection refused by x"))
    first = account.backoff_until - timezone.now()
    account_state.record_failure(account, errors.ConnectionRefused("connection refused by x"))
    account.refresh_from_db()
    assert account.state == Account.State.ERROR and account.backoff_step == 2
    assert account.backoff_until - timezone.now() > first * 0.9 - timedelta(seconds=1)
    assert sync_account_now(account).errors[0].startswith("account")  # backing off: no connection
    sync(account)  # a manual sync ignores the backoff and succeeds
    account.refresh_from_db()
    assert (account.state, account.backoff_step, account.backoff_until) == (Account.State.OK, 0, None)


@pytest.mark.django_db
def test_throttling_sets_the_state_and_honours_the_suggested_backoff(alice, dovecot, mail_user):
    account = dovecot_account(alice, dovecot, mail_user)
    seconds = account_state.record_failure(account, errors.Throttled("throttled", backoff_seconds=900))
    account.refresh_from_db()
    assert seconds >= 900 and account.state == Account.State.THROTTLED
    assert account.backoff_until >= timezone.now() + timedelta(seconds=890)


@pytest.mark.django_db
def test_connection_slots_are_limited_per_account_and_expire(alice, dovecot, mail_user, settings):
    settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT = 2
    settings.MAILGATE_SLOT_WAIT = 0.5  # how long the sync below waits for a slot before reporting
    account = dovecot_account(alice, dovecot, mail_user)
    first = slots.claim_slot(account, "a")
    second = slots.claim_slot(account, "b")
    with pytest.raises(errors.TooManyConnections):
        slots.claim_slot(account, "c")
    first.release()
    third = slots.claim_slot(account, "c")
    ConnectionSlot.objects.filter(holder=second.holder).update(expires_at=timezone.now() - timedelta(seconds=1))
    fourth = slots.claim_slot(account, "d")  # the dead holder's slot is free again
    assert fourth.slot == second.slot and not second.renew()
    assert {third.slot, fourth.slot} == {0, 1}
    report = sync_account_now(account, ignore_backoff=True)
    assert report.errors[0] == "all 2 connections of this account are in use; try again in a moment"


# --------------------------------------------------------------------------- fast paths


CORPUS = "/work/shared/corpus/eml"
TRICKY_HEADERS = [
    b"From sender@example.test Mon Jul  1 10:00:00 2025\r\nSubject: after a unix From line\r\n\r\n",
    b" continued first line\r\nSubject: x\r\n\tfolded\r\nTO: a@example.test,\r\n b@example.test\r\n\r\n",
    b"Subject: bare CR\rFrom: A <a@example.test>\rTo: b@example.test\n\nBody: not a header\r\n",
    b":no name\r\nSubject: one\r\nSubject: two\r\nFrom x\r\nCc: \"Q, R\" <q@example.test>\r\nFrom \r\n",
    b"Subject: no blank line\r\nnot a header line\r\nTo: never@example.test\r\n",
    "From: Jürgen Ölmann <j@example.test>, =?utf-8?q?J=C3=BCrgen?= <k@ex.test>\r\n\r\n".encode(),
]
TRICKY_ADDRESSES = [
    "a@example.test", "Sender  1 <sender1@example.test>", "J. R. Smith\r\n <j.r@example.test>",
    "\xa0@example.test", "a\xa0b <c@example.test>", "a..b@example.test", "<@route:a@example.test>",
    "a@example.test,, b@example.test", "undisclosed-recipients:;", "(comment) a@example.test",
    "\"Quoted, Name\" <q@example.test>", "a@[127.0.0.1]", "<a@example.test> trailing", "a @ example.test",
]


def test_the_header_scan_reads_each_field_exactly_as_the_stdlib_parser():
    from email.parser import HeaderParser

    from imap import identity
    from imap.headers import _WANTED, _raw_headers

    blocks = list(TRICKY_HEADERS)
    if os.path.isdir(CORPUS):
        for name in sorted(os.listdir(CORPUS)):
            with open(os.path.join(CORPUS, name), "rb") as fh:
                raw = fh.read()
            blocks += [identity.to_crlf(raw)[:8192], raw[:8192]]  # as fetched, and with bare LF
    for block in blocks:
        text = block.decode("utf-8", "replace")
        stdlib = HeaderParser().parsestr(text)
        ours = _raw_headers(text)
        for field in _WANTED:
            assert ours.get(field, []) == stdlib.get_all(field, []), (field, block[:200])


def test_plain_addresses_split_as_the_stdlib_does_and_the_rest_is_left_to_it():
    import email.utils

    from imap.headers import _plain_addresses

    taken = 0
    for value in TRICKY_ADDRESSES:
        ours = _plain_addresses(value)
        if ours is not None:
            taken += 1
            assert ours == email.utils.getaddresses([value]), value
    assert taken == 3  # the first three; the others go to the stdlib
    assert _plain_addresses("a" * 50_000 + " b") is None  # no backtracking blow-up on hostile input


def test_the_fetch_tokenizer_keeps_brackets_escapes_and_nil():
    from imap import wire

    data = [(b'1 (UID 5 BODY[HEADER.FIELDS (TO CC)] {4}', b"x\r\n\r"),
            b' X-GM-LABELS ("a \\"b\\" \\\\c" nil NIL "NIL") FLAGS (\\Seen) BODY[TEXT]<0> "unclosed)']
    [item] = wire.fetch_items(data)
    assert item["BODY[HEADER.FIELDS (TO CC)]"] == b"x\r\n\r"
    assert item["X-GM-LABELS"] == ['a "b" \\c', None, None, "NIL"]
    assert item["FLAGS"] == ["\\Seen"] and item["BODY[TEXT]<0>"] == "unclosed)"
