"""`manage.py import_mail`: .eml, mbox and Maildir into the account's Imported folder, idempotently."""

import json
import mailbox
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from imap.models import Account, MessageLocation
from pipeline.models import Message
from tests.builders import dovecot_account, sync


def msg(n: int, lf: bool = False) -> bytes:
    raw = (f"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Import {n}\r\n"
           f"Message-ID: <import-{n}@example.test>\r\n\r\nHello {n}\r\n").encode()
    return raw.replace(b"\r\n", b"\n") if lf else raw


@pytest.fixture
def account(alice):
    return Account.objects.create(owner=alice, display_name="A", email="a@example.test", host="127.0.0.1",
                                  port=143, security=Account.Security.NONE, username="a")


@pytest.fixture
def sources(tmp_path):
    (tmp_path / "one.eml").write_bytes(msg(1, lf=True))
    box = mailbox.mbox(tmp_path / "archive.mbox")
    for n in (2, 3, 4):
        box.add(msg(n, lf=True))
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for n in (5, 6):
        maildir.add(msg(n))
    return [tmp_path / "one.eml", tmp_path / "archive.mbox", tmp_path / "Maildir"]


def run(*args) -> dict:
    out = StringIO()
    call_command("import_mail", *map(str, args), stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.django_db
def test_eml_mbox_and_maildir_are_imported_into_the_imported_folder(account, sources):
    result = run("--account", account.pk, *sources)
    assert (result["messages"], result["created"], result["errors"]) == (6, 6, 0)
    messages = Message.objects.filter(account=account)
    assert sorted(messages.values_list("subject", flat=True)) == [f"Import {n}" for n in range(1, 7)]
    assert {m.folder.name for m in messages} == {"Imported"}
    assert set(messages.values_list("source", "status")) == {("import", "received")}


@pytest.mark.django_db
def test_importing_the_same_files_twice_stores_each_message_once(account, sources):
    run("--account", account.pk, *sources)
    again = run("--account", account.pk, *sources)
    assert (again["created"], again["existing"]) == (0, 6)
    assert Message.objects.filter(account=account).count() == 6


@pytest.mark.django_db
def test_a_message_sync_already_stored_is_recognised_on_import(alice, dovecot, mail_user, tmp_path):
    dovecot.append(mail_user.name, "INBOX", msg(7, lf=True))  # the server holds it with CRLF
    synced = dovecot_account(alice, dovecot, mail_user)
    sync(synced)
    (tmp_path / "seven.eml").write_bytes(msg(7, lf=True))
    result = run("--account", synced.pk, tmp_path / "seven.eml")
    assert (result["created"], result["existing"]) == (0, 1)
    assert Message.objects.filter(account=synced).count() == 1
    assert MessageLocation.objects.filter(account=synced).count() == 1


@pytest.mark.django_db
def test_a_missing_path_or_account_is_a_clear_error(account, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run("--account", account.pk, tmp_path / "nope.eml")
    with pytest.raises(CommandError, match="no account"):
        run("--account", 999999, tmp_path)
