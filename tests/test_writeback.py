"""Batch actions from the UI written back to a real Dovecot: flags, move, delete (imap/writeback.py).

Each test syncs a real mailbox, applies an action through the web-facing frontend.actions.apply,
then reads the server's own state back and compares it with what mailgate recorded.
"""

from __future__ import annotations

import pytest

from frontend import actions
from imap.accounts import create_account
from imap.models import Account, Folder, MessageLocation
from imap.sync import sync_account_now
from pipeline.models import Message

pytestmark = pytest.mark.django_db


def mail(n: int) -> bytes:
    return (f"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Note {n}\r\n"
            f"Message-ID: <writeback-{n}@example.test>\r\n\r\nBody {n}\r\n").encode()


@pytest.fixture
def synced(alice, dovecot, mail_user):
    """An account with three messages in INBOX and empty Archive and Trash folders, synced."""
    for name in ("Archive", "Trash"):
        dovecot.create_folder(mail_user.name, name)
    uids = [dovecot.append(mail_user.name, "INBOX", mail(n)) for n in range(3)]
    account = create_account(owner=alice, email=f"{mail_user.name}@example.test", host="127.0.0.1",
                             port=dovecot.port, security=Account.Security.NONE, username=mail_user.name,
                             password=mail_user.password)
    assert sync_account_now(account, ignore_backoff=True).errors == []
    by_uid = {loc.uid: loc.message for loc in MessageLocation.objects.filter(account=account)
              .select_related("message")}
    return account, [by_uid[uid] for uid in uids], uids


def test_marking_read_sets_seen_on_the_server_and_on_the_message(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    result = actions.apply(alice, [str(m.pk) for m in messages[:2]], "read")
    assert result.as_dict() == {"updated": [str(m.pk) for m in messages[:2]], "errors": [], "undo": [], "notices": []}
    assert dovecot.flags(mail_user.name, "INBOX") == {uids[0]: {"\\Seen"}, uids[1]: {"\\Seen"}, uids[2]: set()}
    assert Message.objects.get(pk=messages[0].pk).flags == ["\\Seen"]
    assert Message.objects.get(pk=messages[2].pk).flags == []


def test_moving_puts_the_message_in_the_target_and_records_its_new_uid(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    archive = Folder.objects.get(account=account, name="Archive")
    result = actions.apply(alice, [str(messages[0].pk)], "move", archive.pk)
    assert result.errors == [] and result.updated == [str(messages[0].pk)]
    assert set(dovecot.flags(mail_user.name, "INBOX")) == {uids[1], uids[2]}
    [new_uid] = dovecot.flags(mail_user.name, "Archive")
    live = MessageLocation.objects.filter(message=messages[0], expunged_at__isnull=True).get()
    assert (live.folder_id, live.uid) == (archive.pk, new_uid)
    # The next sync agrees with what the write-back recorded: nothing new, nothing gone twice.
    report = sync_account_now(account, ignore_backoff=True)
    assert (report.stats.new, report.stats.expunged, report.errors) == (0, 0, [])


def test_deleting_moves_to_trash_and_only_deleting_for_good_in_trash_expunges_only_those_uids(
        synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    result = actions.apply(alice, [str(m.pk) for m in messages[:2]], "delete")
    assert result.errors == []
    inbox = Folder.objects.get(account=account, name="INBOX")
    [undo] = result.undo
    assert (undo["action"], undo["folder"], sorted(undo["ids"])) == ("move", inbox.pk,
                                                                   sorted(str(m.pk) for m in messages[:2]))
    assert set(dovecot.flags(mail_user.name, "INBOX")) == {uids[2]}
    in_trash = {loc.message_id: loc.uid for loc in MessageLocation.objects.filter(
        folder__name="Trash", expunged_at__isnull=True)}
    assert set(dovecot.flags(mail_user.name, "Trash")) == set(in_trash.values()) and len(in_trash) == 2

    # Delete again in the Trash: nothing is destroyed by surprise.
    assert actions.apply(alice, [str(messages[0].pk)], "delete").errors == []
    assert set(dovecot.flags(mail_user.name, "Trash")) == set(in_trash.values())
    # Deleting for good asks for a confirmation, and only works in the Trash.
    with pytest.raises(actions.BadAction, match="confirm"):
        actions.apply(alice, [str(messages[0].pk)], "delete_forever")
    refused = actions.apply(alice, [str(messages[2].pk)], "delete_forever", confirm=True)
    assert refused.updated == [] and "only messages in the Trash" in refused.errors[0]["error"]
    assert uids[2] in dovecot.flags(mail_user.name, "INBOX")

    # Another client marked a message \Deleted without expunging it: our expunge must leave it.
    conn = dovecot.imap(mail_user.name)
    try:
        conn.select("Trash")
        conn.uid("STORE", str(in_trash[messages[1].pk]), "+FLAGS", "(\\Deleted)")
    finally:
        conn.logout()
    assert actions.apply(alice, [str(messages[0].pk)], "delete_forever", confirm=True).errors == []
    assert dovecot.flags(mail_user.name, "Trash") == {in_trash[messages[1].pk]: {"\\Deleted"}}
    assert MessageLocation.objects.filter(message=messages[0], expunged_at__isnull=True).count() == 0


def test_undo_moves_deleted_mail_back_where_it_was(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    result = actions.apply(alice, [str(messages[0].pk)], "delete")
    [undo] = result.undo
    back = actions.apply(alice, undo["ids"], undo["action"], undo["folder"])
    assert back.errors == [] and back.updated == [str(messages[0].pk)]
    assert len(dovecot.flags(mail_user.name, "INBOX")) == 3 and dovecot.flags(mail_user.name, "Trash") == {}
    live = MessageLocation.objects.filter(message=messages[0], expunged_at__isnull=True).get()
    assert live.folder.name == "INBOX"


def test_an_account_without_trash_gets_one_created_once_and_the_user_is_told(alice, dovecot, mail_user):
    uids = [dovecot.append(mail_user.name, "INBOX", mail(n)) for n in range(2)]
    account = create_account(owner=alice, email=f"{mail_user.name}@example.test", host="127.0.0.1",
                             port=dovecot.port, security=Account.Security.NONE, username=mail_user.name,
                             password=mail_user.password)
    assert sync_account_now(account, ignore_backoff=True).errors == []
    assert "Trash" not in dovecot.folders(mail_user.name)
    messages = {loc.uid: loc.message for loc in MessageLocation.objects.filter(account=account)}

    first = actions.apply(alice, [str(messages[uids[0]].pk)], "delete")
    assert first.errors == [] and len(first.notices) == 1 and "created 'Trash'" in first.notices[0]
    assert "Trash" in dovecot.folders(mail_user.name)
    assert len(dovecot.flags(mail_user.name, "Trash")) == 1
    second = actions.apply(alice, [str(messages[uids[1]].pk)], "delete")
    assert second.errors == [] and second.notices == []
    assert len(dovecot.flags(mail_user.name, "Trash")) == 2 and dovecot.flags(mail_user.name, "INBOX") == {}


def test_a_folder_named_like_a_trash_is_the_trash_when_none_is_marked(alice, dovecot, mail_user):
    dovecot.create_folder(mail_user.name, "Deleted Items")
    uid = dovecot.append(mail_user.name, "INBOX", mail(1))
    account = create_account(owner=alice, email=f"{mail_user.name}@example.test", host="127.0.0.1",
                             port=dovecot.port, security=Account.Security.NONE, username=mail_user.name,
                             password=mail_user.password)
    assert sync_account_now(account, ignore_backoff=True).errors == []
    message = MessageLocation.objects.get(account=account, uid=uid).message
    result = actions.apply(alice, [str(message.pk)], "delete")
    assert result.errors == [] and result.notices == []
    assert len(dovecot.flags(mail_user.name, "Deleted Items")) == 1
    assert "Trash" not in dovecot.folders(mail_user.name)


def test_a_folder_whose_uidvalidity_changed_is_refused_until_the_next_sync(synced, alice):
    account, messages, uids = synced
    MessageLocation.objects.filter(message=messages[0]).update(uidvalidity=1)
    result = actions.apply(alice, [str(messages[0].pk)], "flag")
    assert result.updated == []
    assert result.errors == [{"id": str(messages[0].pk),
                              "error": "folder 'INBOX' changed on the server; wait for the next sync"}]


def test_a_server_that_refuses_the_login_is_reported_per_message(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    dovecot.set_password(mail_user.name, "changed-elsewhere")
    result = actions.apply(alice, [str(m.pk) for m in messages[:2]], "unread")
    assert result.updated == []
    assert sorted(e["id"] for e in result.errors) == sorted(str(m.pk) for m in messages[:2])
    assert all("authentication failed" in e["error"] for e in result.errors)
