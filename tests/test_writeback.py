"""Batch actions from the UI written back to a real Dovecot: flags, move, delete (imap/writeback.py).

Each test syncs a real mailbox, applies an action through the web-facing frontend.actions.apply,
then reads the server's own state back and compares it with what mailgate recorded.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from frontend import actions
from imap import slots
from imap.accounts import create_account, set_account_password
from imap.models import Account, ConnectionSlot, Folder, MessageLocation
from imap.sync import sync_account_now
from pipeline.models import Message
from tests.servers.waiting import eventually

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


def test_a_member_marks_the_owners_mail_read_but_cannot_move_or_delete_it_and_charlie_nothing(
        synced, alice, bob, charlie, dovecot, mail_user):
    from django.http import Http404
    from django.test import Client
    from django.urls import reverse

    account, messages, uids = synced
    account.members.add(bob)
    assert actions.apply(bob, [str(messages[0].pk)], "read").errors == []
    assert dovecot.flags(mail_user.name, "INBOX")[uids[0]] == {"\\Seen"}

    archive = Folder.objects.get(account=account, name="Archive")
    bob_client = Client()
    bob_client.force_login(bob)
    for body in ({"action": "delete", "ids": [str(messages[1].pk)]},
                 {"action": "move", "ids": [str(messages[1].pk)], "folder": archive.pk}):
        refused = bob_client.post(reverse("frontend:api_batch"), body, content_type="application/json")
        assert refused.status_code == 403
        assert refused.json() == {"error": f"only the account's owner can {body['action']} its messages"}
    with pytest.raises(Http404):
        actions.apply(charlie, [str(messages[1].pk)], "read")
    # The server is as it was: nothing moved, nothing marked.
    assert set(dovecot.flags(mail_user.name, "INBOX")) == set(uids)
    assert dovecot.flags(mail_user.name, "Archive") == {} and dovecot.flags(mail_user.name, "Trash") == {}
    assert dovecot.flags(mail_user.name, "INBOX")[uids[1]] == set()
    # The owner can.
    assert actions.apply(alice, [str(messages[1].pk)], "delete").errors == []
    assert set(dovecot.flags(mail_user.name, "INBOX")) == {uids[0], uids[2]}


# ---------------------------------------------------------------- connection slots and account state

def hold_every_slot(account, settings) -> list:
    return [slots.claim_slot(account, f"test holder {n}") for n in range(settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT)]


def test_with_every_connection_in_use_a_batch_action_waits_briefly_then_says_so_without_logging_in(
        synced, alice, dovecot, mail_user, settings):
    account, messages, uids = synced
    settings.MAILGATE_SLOT_WAIT = 0.5
    held = hold_every_slot(account, settings)
    attempts = dovecot.login_attempts(mail_user.name)
    started = time.monotonic()
    result = actions.apply(alice, [str(messages[0].pk)], "read")
    assert time.monotonic() - started >= 0.5  # it waited for a slot before giving up
    assert result.as_dict() == {"updated": [], "undo": [], "notices": [], "errors": [{
        "id": str(messages[0].pk),
        "error": f"all {len(held)} connections of this account are in use; try again in a moment"}]}
    account.refresh_from_db()
    assert account.state == Account.State.OK  # a busy account is not a failing one

    held[0].release()
    assert actions.apply(alice, [str(messages[0].pk)], "read").errors == []
    # The log is in order: the second action's login is there, and it is the only one since.
    eventually(lambda: dovecot.login_attempts(mail_user.name) > attempts, 10, "the second action's login logged")
    assert dovecot.login_attempts(mail_user.name) == attempts + 1
    assert dovecot.flags(mail_user.name, "INBOX")[uids[0]] == {"\\Seen"}


@pytest.mark.django_db(transaction=True)
def test_a_batch_action_takes_a_slot_freed_while_it_waits(synced, alice, dovecot, mail_user, settings):
    account, messages, uids = synced
    settings.MAILGATE_SLOT_WAIT = 10
    held = hold_every_slot(account, settings)
    # Another holder (a sync, say) finishes half a second into the wait; committed, as it would be.
    later = threading.Timer(0.5, lambda: (held[-1].release(), connections.close_all()))
    later.start()
    try:
        started = time.monotonic()
        result = actions.apply(alice, [str(messages[1].pk)], "flag")
        waited = time.monotonic() - started
    finally:
        later.join()
    assert result.errors == [] and result.updated == [str(messages[1].pk)]
    assert 0.5 <= waited < 10
    assert dovecot.flags(mail_user.name, "INBOX")[uids[1]] == {"\\Flagged"}
    assert ConnectionSlot.objects.filter(account=account).exclude(holder="").count() == len(held) - 1


def test_an_account_stopped_after_failed_logins_is_not_logged_into_by_a_click(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    Account.objects.filter(pk=account.pk).update(
        state=Account.State.AUTH_FAILED, auth_failures=3,
        last_error="authentication failed (stopped after 3 failed logins; enter the correct password)")
    attempts = dovecot.login_attempts(mail_user.name)
    result = actions.apply(alice, [str(messages[0].pk)], "read")
    assert result.updated == []
    assert [e["error"] for e in result.errors] == [
        f"account {account.pk}: authentication failed (stopped after 3 failed logins; enter the correct password)"]
    # A new password clears the state; the next click logs in, and is the first login since.
    set_account_password(Account.objects.get(pk=account.pk), mail_user.password)
    assert actions.apply(alice, [str(messages[0].pk)], "read").errors == []
    eventually(lambda: dovecot.login_attempts(mail_user.name) > attempts, 10, "the login after the fix logged")
    assert dovecot.login_attempts(mail_user.name) == attempts + 1


def test_a_refused_login_from_a_click_counts_towards_stopping_the_account(synced, alice, dovecot, mail_user):
    account, messages, uids = synced
    dovecot.set_password(mail_user.name, "changed-elsewhere")
    actions.apply(alice, [str(messages[0].pk)], "read")
    account.refresh_from_db()
    assert account.state == Account.State.ERROR and account.auth_failures == 1
    assert account.last_error.startswith("authentication failed")
