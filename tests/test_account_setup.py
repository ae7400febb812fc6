"""Account setup inside the app (frontend/accounts.py) against the real Dovecot: a password account
is saved only after a connection test passed, folders come from the server, uploads are imported,
and a user manages only their own accounts. The admin saves a failing account disabled."""

from __future__ import annotations

import mailbox

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.models import OrmQ

from imap.models import Account
from pipeline.models import Message
from tests.builders import account_row, eml
from tests.servers.oauth_fixtures import signed_in

# check_connection probes in a thread, and the first sync is queued after commit.
pytestmark = pytest.mark.django_db(transaction=True)


def form(dovecot, user, **overrides) -> dict:
    data = {"display_name": "Work", "email": f"{user.name}@example.test", "host": dovecot.host,
            "security": "none", "port": str(dovecot.port), "username": user.name, "password": user.password}
    data.update(overrides)
    return data


def queued_task_names() -> list[str]:
    return [task.name() for task in OrmQ.objects.all()]


def test_a_wrong_password_is_refused_with_the_servers_answer_and_nothing_is_saved(client, alice, dovecot,
                                                                                  mail_user):
    client.force_login(alice)
    page = client.post(reverse("frontend:account_add"), {**form(dovecot, mail_user, password="typo"),
                                                          "action": "save"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "The connection test failed: authentication failed" in text and "Nothing was saved" in text
    assert not Account.objects.exists()
    assert f"passwd-file({mail_user.name},127.0.0.1,<" in dovecot.log_text()  # it really asked the server


def test_a_test_lists_the_folders_and_save_stores_an_enabled_account_syncing_the_chosen_ones(
        client, alice, dovecot, mail_user):
    dovecot.create_folder(mail_user.name, "Projects")
    dovecot.create_folder(mail_user.name, "Lists")
    client.force_login(alice)
    tested = client.post(reverse("frontend:account_add"), {**form(dovecot, mail_user), "action": "test"})
    text = tested.content.decode()
    assert "The connection works" in text
    for name in ("INBOX", "Projects", "Lists"):
        assert f'value="{name}"' in text
    assert 'value="' + mail_user.password + '"' in text  # kept in the form for "save", this user's page only
    assert not Account.objects.exists()

    saved = client.post(reverse("frontend:account_add"),
                        {**form(dovecot, mail_user), "folders": ["INBOX", "Projects"], "action": "save"})
    account = Account.objects.get()
    assert saved.status_code == 302 and saved["Location"] == f"/mail-accounts/?added={account.pk}"
    assert account.enabled and account.state == Account.State.OK and account.owner == alice
    assert account.folders_include == ["INBOX", "Projects"] and account.get_password() == mail_user.password
    assert f"sync-account:{account.pk}" in queued_task_names()  # the first sync, queued after commit


def test_the_accounts_page_lists_only_ones_own_accounts_and_others_are_not_found(client, alice, bob):
    mine, theirs = account_row(alice, name="Alice mail"), account_row(bob, name="Bob mail")
    shared = account_row(bob, name="Shared with Alice", members=[alice])
    client.force_login(alice)
    page = client.get(reverse("frontend:accounts")).content.decode()
    assert mine.display_name in page and theirs.display_name not in page and shared.display_name not in page
    for name in ("account_edit", "account_sync", "account_import", "account_delete"):
        for other in (theirs, shared):  # a member reads the mail; the account stays its owner's
            response = (client.get if name == "account_edit" else client.post)(reverse(f"frontend:{name}",
                                                                                       args=[other.pk]))
            assert response.status_code == 404, name
    assert Account.objects.filter(pk=theirs.pk).exists()


def test_sync_now_queues_a_sync_and_a_stopped_account_says_why_not(client, alice):
    account = account_row(alice)
    client.force_login(alice)
    client.post(reverse("frontend:account_sync", args=[account.pk]))
    assert f"sync-account:{account.pk}" in queued_task_names()

    OrmQ.objects.all().delete()
    Account.objects.filter(pk=account.pk).update(state=Account.State.AUTH_FAILED, last_error="authentication failed")
    page = client.post(reverse("frontend:account_sync", args=[account.pk]), follow=True).content.decode()
    assert "cannot sync now: authentication failed" in page and not queued_task_names()


def test_eml_and_mbox_uploads_are_imported_once_and_bad_files_are_refused_by_name(client, alice, tmp_path,
                                                                                   settings):
    account = account_row(alice)
    box = mailbox.mbox(tmp_path / "archive.mbox")
    for n in (2, 3):
        box.add(eml(subject=f"Archived {n}", message_id=f"<archived-{n}@example.test>"))
    box.close()
    one = eml(subject="Single", message_id="<single@example.test>")
    client.force_login(alice)
    url = reverse("frontend:account_import", args=[account.pk])

    def upload(*files):
        return client.post(url, {"files": list(files)}, follow=True).content.decode()

    archive = (tmp_path / "archive.mbox").read_bytes()
    page = upload(SimpleUploadedFile("one.eml", one), SimpleUploadedFile("archive.mbox", archive))
    assert "Imported 3 messages from one.eml, archive.mbox" in page and "3 new, 0 already there" in page
    assert "1 new" not in upload(SimpleUploadedFile("one.eml", one))  # again: nothing stored twice
    assert Message.objects.filter(account=account).count() == 3
    assert {m.folder.name for m in Message.objects.filter(account=account)} == {"Imported"}

    assert "report.pdf: only .eml and .mbox files can be imported" in upload(SimpleUploadedFile("report.pdf", b"%PDF"))
    assert "notes.eml: no mail headers found" in upload(SimpleUploadedFile("notes.eml", b"just some text\n\nmore"))
    assert "old.mbox: not an mbox file" in upload(SimpleUploadedFile("old.mbox", one))
    assert "empty.eml: the file is empty" in upload(SimpleUploadedFile("empty.eml", b""))
    settings.MAILGATE_IMPORT_MAX_BYTES = 100
    assert "larger than the limit" in upload(SimpleUploadedFile("one.eml", one))
    assert Message.objects.filter(account=account).count() == 3


def test_editing_with_a_wrong_password_keeps_the_stored_one(client, alice, dovecot, mail_user):
    account = account_row(alice, host=dovecot.host, port=dovecot.port, security=Account.Security.NONE,
                          username=mail_user.name, password=mail_user.password, folders=("INBOX",))
    client.force_login(alice)
    url = reverse("frontend:account_edit", args=[account.pk])
    page = client.post(url, {**form(dovecot, mail_user, password="wrong"), "action": "save"})
    assert "The connection test failed" in page.content.decode()
    account.refresh_from_db()
    assert account.get_password() == mail_user.password and account.enabled

    saved = client.post(url, {**form(dovecot, mail_user, password="", display_name="Renamed"),
                              "folders": ["INBOX"], "action": "save"})
    assert saved.status_code == 302
    account.refresh_from_db()
    assert account.display_name == "Renamed" and account.get_password() == mail_user.password


def test_the_admin_saves_an_account_whose_test_fails_disabled_and_enables_it_once_it_passes(
        admin_client, admin_user, dovecot, mail_user, django_capture_on_commit_callbacks):
    data = {**form(dovecot, mail_user, password="typo"), "owner": admin_user.pk, "folders_include": "[]",
            "folders_exclude": "[]", "push_folders": "[]", "enabled": "on"}
    with django_capture_on_commit_callbacks(execute=True):
        page = admin_client.post(reverse("admin:imap_account_add"), data, follow=True).content.decode()
    account = Account.objects.get()
    assert not account.enabled and "Saved but NOT enabled: the connection test failed" in page
    assert not queued_task_names()  # no sync, no IDLE login with the bad password

    data["password"] = mail_user.password
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:imap_account_change", args=[account.pk]), data)
    account.refresh_from_db()
    assert account.enabled
    assert queued_task_names() == [f"sync-account:{account.pk}"]  # its first sync starts at once


def test_deleting_an_oauth_account_revokes_its_grant_and_a_dead_provider_does_not_block_it(
        client, alice, settings, provider, generic, oauth_user):
    account = signed_in(alice, provider, generic, oauth_user)
    client.force_login(alice)
    client.post(reverse("frontend:account_delete", args=[account.pk]))
    assert not Account.objects.exists()
    assert provider.grants[oauth_user].revoked  # RFC 7009 revocation reached the provider

    again = signed_in(alice, provider, generic, oauth_user)
    settings.MAILGATE_OAUTH_GENERIC_REVOKE_URL = "http://127.0.0.1:9/revoke"  # refused
    page = client.post(reverse("frontend:account_delete", args=[again.pk]), follow=True).content.decode()
    assert "Deleted" in page and not Account.objects.exists()
    assert not provider.grants[oauth_user].revoked


def test_the_same_mailbox_cannot_be_connected_twice_and_the_page_says_where_it_is(client, alice, bob, dovecot,
                                                                                  mail_user):
    # Two accounts on one mailbox would sync and relay every message twice.
    client.force_login(alice)
    client.post(reverse("frontend:account_add"), {**form(dovecot, mail_user), "folders": ["INBOX"], "action": "save"})
    first = Account.objects.get()
    page = client.post(reverse("frontend:account_add"),
                       {**form(dovecot, mail_user, display_name="Again", host=dovecot.host.upper(),
                               username=mail_user.name.upper()), "folders": ["INBOX"], "action": "save"})
    assert page.status_code == 200
    assert "This mailbox is already connected as \u201cWork\u201d." in page.content.decode()
    assert list(Account.objects.values_list("pk", flat=True)) == [first.pk]

    # Another user may connect it (their own view of it); a disabled copy may stay, not be enabled.
    client.force_login(bob)
    client.post(reverse("frontend:account_add"), {**form(dovecot, mail_user), "folders": ["INBOX"], "action": "save"})
    assert Account.objects.filter(owner=bob).count() == 1
    copy = account_row(alice, name="Old copy", host=dovecot.host, port=dovecot.port, username=mail_user.name,
                       enabled=False)
    client.force_login(alice)
    page = client.post(reverse("frontend:account_edit", args=[copy.pk]),
                       {**form(dovecot, mail_user, display_name="Old copy"), "folders": ["INBOX"], "action": "save"})
    assert "This mailbox is already connected as \u201cWork\u201d." in page.content.decode()
    copy.refresh_from_db()
    assert not copy.enabled


def test_the_database_refuses_a_second_enabled_account_on_one_mailbox(alice):
    from django.db import IntegrityError, transaction

    account_row(alice, name="One", host="imap.example.test", username="a@example.test")
    with pytest.raises(IntegrityError), transaction.atomic():
        account_row(alice, name="Two", host="IMAP.example.test", username="A@example.test")
    account_row(alice, name="Two", host="IMAP.example.test", username="A@example.test", enabled=False)


def test_signing_in_again_to_a_connected_mailbox_reconnects_that_account(alice, provider, generic, oauth_user):
    first = signed_in(alice, provider, generic, oauth_user)
    again = signed_in(alice, provider, generic, oauth_user)
    assert again.pk == first.pk and Account.objects.count() == 1


def test_the_upgrade_keeps_the_oldest_of_an_owners_copies_of_a_mailbox_enabled(alice, bob):
    # imap/migrations/0006 runs this before it adds the constraint, on an install that has copies.
    import importlib

    from django.apps import apps
    from django.db import connection

    upgrade = importlib.import_module("imap.migrations.0006_one_enabled_account_per_mailbox")
    constraint = next(c for c in Account._meta.constraints if c.name == "imap_account_one_enabled_per_mailbox")
    with connection.schema_editor() as editor:
        editor.remove_constraint(Account, constraint)
    try:
        oldest = account_row(alice, name="Oldest", host="imap.example.test", username="a@example.test")
        copy = account_row(alice, name="Copy", host="IMAP.example.test", username="A@example.test")
        other = account_row(bob, name="Bob's", host="imap.example.test", username="a@example.test")
        upgrade.disable_later_copies(apps, None)
    finally:
        with connection.schema_editor() as editor:
            editor.add_constraint(Account, constraint)
    states = dict(Account.objects.values_list("pk", "enabled"))
    assert states == {oldest.pk: True, copy.pk: False, other.pk: True}
    assert "older account" in Account.objects.get(pk=copy.pk).last_error


def test_the_admin_refuses_a_second_enabled_account_on_one_mailbox(admin_client, admin_user, dovecot, mail_user,
                                                                 django_capture_on_commit_callbacks):
    data = {**form(dovecot, mail_user), "owner": admin_user.pk, "folders_include": "[]",
            "folders_exclude": "[]", "push_folders": "[]", "enabled": "on"}
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:imap_account_add"), data)
    page = admin_client.post(reverse("admin:imap_account_add"), {**data, "display_name": "Again"})
    assert page.status_code == 200
    assert "This mailbox is already connected (the same server and login)." in page.content.decode()
    assert Account.objects.count() == 1
