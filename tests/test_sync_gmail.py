"""Gmail (X-GM-EXT-1) sync: X-GM-MSGID is the identity, X-GM-THRID the thread, X-GM-LABELS the labels.

There is no Gmail here and Dovecot has no X-GM-EXT-1, so the sync tests run the real imap/sync.py
(imap-tools, imaplib, a real socket) against tests/servers/fake_gmail.py, a small IMAP server that
answers FETCH the way Google's IMAP extensions document shows. The fake server is the only seam.
The unit tests feed Gmail-shaped FETCH responses to the wire parser and the label decoder directly.
"""

from __future__ import annotations

import pytest

from imap import identity, wire
from imap.accounts import create_account
from imap.models import Account, MessageLocation
from pipeline import threads
from pipeline.models import Message, Thread
from pipeline.standardize import standardize, standardize_batch
from tests.builders import sync
from tests.servers.fake_gmail import FakeGmail

# Ids in the size and shape Gmail uses (the first two are from Google's examples).
MSGID_LUNCH, MSGID_REPLY, MSGID_OTHER = 1278455344230334865, 1278455344230334866, 1266894439832287888
MSGID_TWIN_1, MSGID_TWIN_2 = 1278455344230339001, 1278455344230339002
THRID_LUNCH, THRID_OTHER, THRID_TWIN_1, THRID_TWIN_2 = MSGID_LUNCH, MSGID_OTHER, MSGID_TWIN_1, MSGID_TWIN_2

# X-GM-LABELS as Gmail sends them: system labels as atoms, a label with a space quoted, non-ASCII
# labels in modified UTF-7 (the RFC 3501 example name, quoted, and "Café" as an atom).
LUNCH_LABELS_WIRE = r'\Inbox \Sent Important "Muy Importante" "~peter/mail/&U,BTFw-/&ZeVnLIqe-" Caf&AOk-'
LUNCH_LABELS = ["\\Inbox", "\\Sent", "Important", "Muy Importante", "~peter/mail/台北/日本語", "Café"]


def mail(sender: str, to: str, subject: str, message_id: str, body: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Tue, 01 Jul 2025 10:00:00 +0000\r\n"
            f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{body}\r\n").encode()


LUNCH = mail("Bob <bob@example.test>", "alice@example.test", "Lunch on Friday?", "lunch@example.test",
             "Shall we meet at noon?")
# Gmail put this one in the lunch conversation although nothing in its headers says so: only
# X-GM-THRID links it.
REPLY = mail("Charlie <charlie@example.test>", "alice@example.test", "Something else entirely", "reply@example.test",
             "Count me in.")
# Same subject and people as LUNCH, but Gmail keeps it in another conversation.
OTHER = mail("Bob <bob@example.test>", "alice@example.test", "Lunch on Friday?", "other@example.test",
             "A different lunch, a different thread.")
# Byte-identical messages that Gmail holds as two (sent twice): two X-GM-MSGIDs, two Messages.
TWIN = mail("Bob <bob@example.test>", "alice@example.test", "Ping", "twin@example.test", "ping")


@pytest.fixture
def gmail():
    with FakeGmail("alice@gmail.test", "app-password") as server:
        server.add("[Gmail]/All Mail", LUNCH, msgid=MSGID_LUNCH, thrid=THRID_LUNCH, labels=LUNCH_LABELS_WIRE,
                   flags="\\Seen")
        server.add("[Gmail]/All Mail", REPLY, msgid=MSGID_REPLY, thrid=THRID_LUNCH, labels=r"\Inbox")
        server.add("[Gmail]/All Mail", OTHER, msgid=MSGID_OTHER, thrid=THRID_OTHER, labels='"Muy Importante"')
        server.add("[Gmail]/All Mail", TWIN, msgid=MSGID_TWIN_1, thrid=THRID_TWIN_1)
        server.add("[Gmail]/All Mail", TWIN, msgid=MSGID_TWIN_2, thrid=THRID_TWIN_2)
        server.add("INBOX", REPLY, msgid=MSGID_REPLY, thrid=THRID_LUNCH, labels=r"\Inbox")
        server.add("INBOX", LUNCH, msgid=MSGID_LUNCH, thrid=THRID_LUNCH, labels=LUNCH_LABELS_WIRE, flags="\\Seen")
        yield server


def gmail_account(owner, gmail) -> Account:
    return create_account(owner=owner, email="alice@gmail.test", host="127.0.0.1", port=gmail.port,
                          security=Account.Security.NONE, username=gmail.user, password=gmail.password)


def live_locations(message) -> dict[str, MessageLocation]:
    return {loc.folder.name: loc for loc in
            MessageLocation.objects.filter(message=message, expunged_at__isnull=True).select_related("folder")}


# --------------------------------------------------------------------------- units


def test_a_gmail_fetch_response_parses_into_ids_labels_and_both_literals():
    # imaplib's shape of "* 1 FETCH (X-GM-THRID ... BODY[HEADER] {n}\r\n...  BODY[TEXT]<0> {m}\r\n...)".
    header = b"Subject: Lunch\r\nMessage-ID: <lunch@example.test>\r\n\r\n"
    data = [(b'1 (X-GM-THRID 1278455344230334865 X-GM-MSGID 1278455344230334865 X-GM-LABELS (\\Inbox \\Sent '
             b'Important "Muy Importante" "[Imap]/Entw&APw-rfe" &ZeVnLIqe-) UID 4 RFC822.SIZE 1234 FLAGS (\\Seen) '
             b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" BODY[HEADER] {%d}' % len(header), header),
            (b" BODY[TEXT]<0> {9}", b"Hi (there"),
            b")"]
    [item] = wire.fetch_items(data)
    assert wire.as_int(item["X-GM-MSGID"]) == wire.as_int(item["X-GM-THRID"]) == 1278455344230334865
    assert item["X-GM-LABELS"] == ["\\Inbox", "\\Sent", "Important", "Muy Importante", "[Imap]/Entw&APw-rfe",
                                   "&ZeVnLIqe-"]
    assert wire.labels(item["X-GM-LABELS"]) == ["\\Inbox", "\\Sent", "Important", "Muy Importante", "[Imap]/Entwürfe",
                                                "日本語"]
    assert (item["UID"], item["RFC822.SIZE"], item["FLAGS"]) == ("4", "1234", ["\\Seen"])
    assert item["INTERNALDATE"] == "17-Jul-1996 02:44:25 -0700"
    assert item["BODY[HEADER]"] == header and item["BODY[TEXT]<0>"] == b"Hi (there"


def test_labels_are_decoded_from_modified_utf7_and_kept_as_sent_when_they_are_not_valid_utf7():
    sent = ["\\Important", "Muy Importante", "~peter/mail/&U,BTFw-/&ZeVnLIqe-", wire.Literal(b"Caf&AOk-"),
            "R&-D", "R&D", None, "Café"]
    assert wire.labels(sent) == ["\\Important", "Muy Importante", "~peter/mail/台北/日本語", "Café", "R&D", "R&D", "Café"]


def test_the_gmail_identity_is_the_msgid_whatever_the_bytes():
    header, size, prefix = identity.split_raw(TWIN)
    assert identity.identity(header, size=size, body_prefix=prefix, gm_msgid=MSGID_TWIN_1) == f"gm:{MSGID_TWIN_1}"
    assert identity.identity_of_raw(LUNCH, gm_msgid=MSGID_LUNCH) == identity.identity_of_raw(
        OTHER, gm_msgid=MSGID_LUNCH)
    assert identity.identity_of_raw(TWIN, gm_msgid=MSGID_TWIN_1) != identity.identity_of_raw(
        TWIN, gm_msgid=MSGID_TWIN_2)


# --------------------------------------------------------------------------- sync over a socket


@pytest.mark.django_db
def test_a_gmail_message_in_inbox_and_all_mail_is_one_message_with_two_locations_and_its_labels(alice, gmail):
    account = gmail_account(alice, gmail)
    report = sync(account)

    assert report.stats.folders == 3  # INBOX, [Gmail]/Sent Mail, [Gmail]/All Mail; [Gmail] is \Noselect
    assert Message.objects.filter(account=account).count() == 5
    lunch = Message.objects.get(account=account, gm_msgid=MSGID_LUNCH)
    assert lunch.identity == f"gm:{MSGID_LUNCH}"
    where = live_locations(lunch)
    assert sorted(where) == ["INBOX", "[Gmail]/All Mail"]
    assert (where["INBOX"].uid, where["[Gmail]/All Mail"].uid) == (2, 1)
    assert where["INBOX"].gm_labels == where["[Gmail]/All Mail"].gm_labels == LUNCH_LABELS
    assert sorted(lunch.labels) == sorted(LUNCH_LABELS)
    assert lunch.flags == ["\\Seen"]
    assert Message.objects.get(gm_msgid=MSGID_OTHER).labels == ["Muy Importante"]
    # Byte-identical twins with two X-GM-MSGIDs are two messages.
    twins = Message.objects.filter(account=account, subject="Ping").order_by("gm_msgid")
    assert [m.identity for m in twins] == [f"gm:{MSGID_TWIN_1}", f"gm:{MSGID_TWIN_2}"]
    # Every message's body was downloaded exactly once, although two are in two folders.
    assert len(gmail.bodies_sent) == 5
    assert set(Message.objects.filter(account=account).values_list("status", flat=True)) == {
        Message.Status.RECEIVED}
    # Read-only all the way, and the Gmail items were asked for.
    verbs = [line.split()[1].upper() + (" " + line.split()[2].upper() if line.split()[1].upper() == "UID" else "")
             for line in gmail.commands]
    assert "SELECT" not in verbs and not any("STORE" in v for v in verbs) and "EXAMINE" in verbs
    assert any("X-GM-MSGID X-GM-THRID X-GM-LABELS" in line for line in gmail.commands)

    # A second sync finds nothing new and downloads nothing.
    again = sync(account)
    assert (again.stats.new, again.stats.bodies) == (0, 0)
    assert Message.objects.filter(account=account).count() == 5


@pytest.mark.django_db
def test_x_gm_thrid_makes_one_thread_for_the_conversation_and_standardize_keeps_it(alice, gmail):
    account = gmail_account(alice, gmail)
    sync(account)
    lunch, reply, other = (Message.objects.get(gm_msgid=i) for i in (MSGID_LUNCH, MSGID_REPLY, MSGID_OTHER))
    assert lunch.thread_id is not None and lunch.thread_id == reply.thread_id != other.thread_id
    assert lunch.thread.gm_thrid == THRID_LUNCH and other.thread.gm_thrid == THRID_OTHER

    for message in [lunch, reply, other, *Message.objects.filter(subject="Ping")]:
        assert standardize(message.pk) == "history"  # in the mailbox when it was connected

    lunch, reply, other = (Message.objects.get(gm_msgid=i) for i in (MSGID_LUNCH, MSGID_REPLY, MSGID_OTHER))
    conversation = Thread.objects.get(owner=alice, gm_thrid=THRID_LUNCH)
    # Different subjects and no References, still one conversation: Gmail said so.
    assert lunch.thread_id == reply.thread_id == conversation.pk
    assert conversation.message_count == 2 and conversation.subject == "Lunch on Friday?"
    assert conversation.participants == ["alice@example.test", "bob@example.test", "charlie@example.test"]
    # Same subject and people as the lunch thread, but Gmail keeps it apart, and so do we.
    assert other.thread.gm_thrid == THRID_OTHER and other.thread.message_count == 1
    assert Thread.objects.filter(owner=alice).count() == 4

    # A message that reaches standardize without a thread (e.g. imported) joins by X-GM-THRID too.
    imported = Message.objects.get(gm_msgid=MSGID_TWIN_1)
    imported.thread = None
    assert threads.assign_thread(imported, gm_thrid=THRID_LUNCH).pk == conversation.pk


@pytest.mark.django_db
def test_x_gm_thrid_threads_a_batch_as_it_threads_one_message_at_a_time(alice, gmail, settings):
    settings.MAILGATE_STAGE_WRITE_BATCH = 50  # all but the first (which goes on alone) in one write
    account = gmail_account(alice, gmail)
    sync(account)
    in_order = list(Message.objects.filter(account=account).order_by("received_at", "pk"))  # as claimed
    assert standardize_batch([m.pk for m in in_order]) == "history 5"

    lunch, reply, other = (Message.objects.get(gm_msgid=i) for i in (MSGID_LUNCH, MSGID_REPLY, MSGID_OTHER))
    conversation = Thread.objects.get(owner=alice, gm_thrid=THRID_LUNCH)
    assert lunch.thread_id == reply.thread_id == conversation.pk and conversation.message_count == 2
    # Sync made the thread without a subject: the first of its messages to be threaded names it.
    assert conversation.subject == next(m.subject for m in in_order if m.gm_msgid in (MSGID_LUNCH, MSGID_REPLY))
    assert conversation.participants == ["alice@example.test", "bob@example.test", "charlie@example.test"]
    assert other.thread.gm_thrid == THRID_OTHER and other.thread.message_count == 1
    assert Thread.objects.filter(owner=alice).count() == 4


@pytest.mark.django_db
def test_after_a_uidvalidity_change_locations_are_remapped_by_x_gm_msgid_and_nothing_is_downloaded_again(
        alice, gmail):
    account = gmail_account(alice, gmail)
    sync(account)
    before = dict(Message.objects.filter(account=account).values_list("identity", "pk"))
    downloads = len(gmail.bodies_sent)

    gmail.renumber("INBOX", uidvalidity=77, first_uid=100)
    gmail.renumber("[Gmail]/All Mail", uidvalidity=78, first_uid=500)
    report = sync(account)

    assert report.stats.rescans == 2 and report.stats.bodies == 0 and len(gmail.bodies_sent) == downloads
    assert dict(Message.objects.filter(account=account).values_list("identity", "pk")) == before
    lunch = Message.objects.get(pk=before[f"gm:{MSGID_LUNCH}"])
    where = live_locations(lunch)
    assert {name: (loc.uidvalidity, loc.uid) for name, loc in where.items()} == {
        "INBOX": (77, 101), "[Gmail]/All Mail": (78, 500)}
    assert where["INBOX"].gm_labels == LUNCH_LABELS
    # The old-UIDVALIDITY locations are retired, none is left live beside the new ones.
    old = MessageLocation.objects.filter(account=account, uidvalidity__in=[1, 11])
    assert old.count() == 7 and not old.filter(expunged_at__isnull=True).exists()
    assert MessageLocation.objects.filter(account=account, expunged_at__isnull=True).count() == 7
    assert sorted(Message.objects.get(pk=lunch.pk).labels) == sorted(LUNCH_LABELS)


@pytest.mark.django_db
def test_a_label_sent_as_an_atom_with_a_bracket_loses_neither_its_message_nor_the_next(alice, gmail):
    # "[" is a legal atom character; the tokenizer used to read "Projekt[2024" up to the "]" of
    # BODY[HEADER], swallowing the UID and the next response: both messages were skipped for good.
    gmail.add("INBOX", OTHER, msgid=MSGID_OTHER, thrid=THRID_OTHER, labels=r"Projekt[2024 \Inbox")
    account = gmail_account(alice, gmail)
    sync(account)

    other = Message.objects.get(account=account, gm_msgid=MSGID_OTHER)
    assert live_locations(other)["INBOX"].gm_labels == ["Projekt[2024", "\\Inbox"]
    assert sorted(other.labels) == ["Muy Importante", "Projekt[2024", "\\Inbox"]
    assert Message.objects.filter(account=account).count() == 5
    assert MessageLocation.objects.filter(account=account, folder__name="INBOX").count() == 3


@pytest.mark.django_db
def test_labels_changed_in_gmail_after_the_first_sync_reach_the_message(alice, gmail):
    account = gmail_account(alice, gmail)
    sync(account)

    gmail.relabel(MSGID_LUNCH, r'\Inbox "Muy Importante" Caf&AOk-/Bar')
    gmail.relabel(MSGID_OTHER, "")
    report = sync(account)

    lunch = Message.objects.get(account=account, gm_msgid=MSGID_LUNCH)
    assert sorted(lunch.labels) == sorted(["\\Inbox", "Muy Importante", "Café/Bar"])
    assert {loc.gm_labels[-1] for loc in live_locations(lunch).values()} == {"Café/Bar"}
    # The last label removed: the message has none any more.
    assert Message.objects.get(account=account, gm_msgid=MSGID_OTHER).labels == []
    assert report.stats.updated == 3 and report.stats.bodies == 0
