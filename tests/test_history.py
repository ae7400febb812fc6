"""History is not relayed: mail that was in the mailbox before it was connected, or that was
imported, is stored, standardized and searchable, and reaches no subscriber unless the owner
relays it on purpose (`manage.py relay_history`, the admin action)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from imap.importer import import_paths
from imap.models import Account
from pipeline import history, tasks
from pipeline.ingest import ingest_raw
from pipeline.models import Delivery, Event, Message
from tests.builders import (dovecot_account, eml, fill_maildir, route_everything, run_stages, smtp_service,
                            subscribe, sync)


@pytest.fixture
def relay(alice, clean_smtp_sink):
    """Alice relays everything by SMTP to bob."""
    service = smtp_service(alice, clean_smtp_sink)
    route_everything(alice, service)
    subscribe(service, "bob", "bob@example.test")
    return clean_smtp_sink


@pytest.fixture
def account(alice):
    return Account.objects.create(owner=alice, display_name="A", email="a@example.test", host="127.0.0.1",
                                  port=143, security=Account.Security.NONE, username="a")


def ingest_history(owner, account, n: int) -> Message:
    message, _ = ingest_raw(owner=owner, raw=eml(subject=f"Old {n}", message_id=f"<old-{n}@example.test>"),
                            identity=f"old-{n}", source="imap", account=account,
                            arrival=Message.Arrival.HISTORY)
    return message


@pytest.mark.django_db
def test_history_is_standardized_and_kept_but_never_distributed(alice, account, relay):
    message = ingest_history(alice, account, 1)
    assert tasks.standardize(str(message.pk)) == "history"
    assert tasks.distribute(str(message.pk)) == "skipped"
    message.refresh_from_db()
    assert message.status == Message.Status.HISTORY
    assert message.suppressed_reason == "history: in the mailbox before it was connected"
    assert message.subject == "Old 1" and message.text_body  # standardized: searchable, readable
    assert list(Event.objects.filter(message=message).values_list("kind", flat=True)) == [
        "received", "standardized", "history"]
    assert Event.objects.get(message=message, kind="history").detail == "history: in the mailbox before it was connected"
    assert not Delivery.objects.exists() and relay.messages == []


@pytest.mark.django_db
def test_imported_mail_is_history_unless_relay_is_asked_for(alice, account, relay, tmp_path):
    (tmp_path / "old.eml").write_bytes(eml(subject="Imported old", message_id="<imp-1@example.test>"))
    (tmp_path / "new.eml").write_bytes(eml(subject="Imported new", message_id="<imp-2@example.test>"))
    import_paths(account, [tmp_path / "old.eml"])
    out = StringIO()
    call_command("import_mail", "--account", str(account.pk), "--relay", str(tmp_path / "new.eml"), stdout=out)
    old, new = Message.objects.filter(account=account).order_by("received_at", "pk")
    assert (old.arrival, new.arrival) == ("history", "new")
    assert run_stages(old)[0] == "history"
    assert run_stages(new) == ["standardized", "distributed", "sent"]
    assert [m.message["Subject"] for m in relay.messages] == ["Imported new"]


@pytest.mark.django_db
def test_relay_history_says_how_many_then_relays_each_once(alice, account, relay):
    messages = [ingest_history(alice, account, n) for n in range(3)]
    for message in messages[:2]:
        tasks.standardize(str(message.pk))  # two standardized, one still waiting
    out = StringIO()
    call_command("relay_history", "--account", str(account.pk), "--since", "2020-01-01", "--dry-run", stdout=out)
    assert "3 history message(s)" in out.getvalue() and "would be queued" in out.getvalue()
    assert not Delivery.objects.exists()

    out = StringIO()
    call_command("relay_history", "--account", str(account.pk), "--since", "2020-01-01", stdout=out)
    assert "3 message(s) queued." in out.getvalue()
    for message in messages:
        message.refresh_from_db()
        run_stages(message)
    assert sorted(m.message["Subject"] for m in relay.messages) == ["Old 0", "Old 1", "Old 2"]
    # Again: nothing is history any more, nothing is sent twice.
    assert history.relay(Message.objects.filter(account=account)) == 0
    assert Delivery.objects.count() == 3
    assert Event.objects.filter(kind="requeued", detail="history relayed by relay_history").count() == 3


@pytest.mark.django_db
def test_relay_history_counts_only_mail_dated_since_the_given_day(alice, account, relay):
    tasks.standardize(str(ingest_history(alice, account, 1).pk))  # eml() dates every message 2025-03-03
    out = StringIO()
    call_command("relay_history", "--account", str(account.pk), "--since", "2025-03-04", stdout=out)
    assert out.getvalue().startswith("0 history message(s)")
    assert Message.objects.get().arrival == "history"


@pytest.mark.django_db
def test_relay_history_refuses_a_bad_date_or_an_unknown_account(alice, account):
    ingest_history(alice, account, 1)
    with pytest.raises(CommandError, match="is not a date"):
        call_command("relay_history", "--account", str(account.pk), "--since", "last week")
    with pytest.raises(CommandError, match="no messages for an account with id 999"):
        call_command("relay_history", "--account", "999", "--since", "2020-01-01")


# ---------------------------------------------------------------- a real mailbox (Dovecot)

def drain(account) -> None:
    """Run every waiting stage of the account's mail, as the worker would."""
    while pending := list(Message.objects.filter(account=account, status=Message.Status.RECEIVED)):
        for message in pending:
            run_stages(message)


def relayed_subjects(sink) -> list[str]:
    return sorted(str(m.message["Subject"]) for m in sink.messages)


def plain(subject: str, date: str = "Tue, 01 Jul 2025 10:00:00 +0000") -> bytes:
    return (f"From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{abs(hash(subject))}@example.test>\r\n\r\nHello\r\n").encode()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_connected_mailbox_relays_none_of_its_500_messages_and_each_new_one_once(
        alice, relay, dovecot, mail_user):
    fill_maildir(dovecot, mail_user, "INBOX", [(plain(f"Old {n}"), "S") for n in range(500)])
    account = dovecot_account(alice, dovecot, mail_user)
    pushed = []

    def arrives_during_the_first_sync(count):
        if not pushed:  # what an IDLE push would report while phase 1 runs: it arrived after
            pushed.append(dovecot.append(mail_user.name, "INBOX", plain("Arrived during the first sync")))

    sync(account, progress=arrives_during_the_first_sync)
    drain(account)
    assert Message.objects.filter(account=account, status=Message.Status.HISTORY).count() == 500
    assert not Delivery.objects.exists() and relay.messages == []

    # Appended today with a 2018 Date: it arrived now, so it is new.
    dovecot.append(mail_user.name, "INBOX", plain("Dated 2018", date="Mon, 01 Jan 2018 09:00:00 +0000"))
    sync(account)
    drain(account)
    sync(account)  # nothing more to find: nothing is relayed twice
    drain(account)
    assert relayed_subjects(relay) == ["Arrived during the first sync", "Dated 2018"]
    assert Delivery.objects.count() == 2
    old = Message.objects.filter(account=account, subject="Old 7").get()
    assert (old.status, old.suppressed_reason) == ("history", "history: in the mailbox before it was connected")


@pytest.mark.django_db
def test_a_uidvalidity_reset_relays_nothing_twice_and_a_folder_added_later_starts_as_history(
        alice, relay, dovecot, mail_user):
    for n in range(5):
        dovecot.append(mail_user.name, "Projects", plain(f"Project {n}"))
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)
    dovecot.append(mail_user.name, "Projects", plain("Project news"))
    sync(account)
    drain(account)
    assert relayed_subjects(relay) == ["Project news"]

    # The folder is recreated (new UIDVALIDITY) with the same mail: re-found by identity, each
    # message stays what it was; none is relayed again. Only one never seen here is new.
    dovecot.delete_folder(mail_user.name, "Projects")
    for subject in [f"Project {n}" for n in range(5)] + ["Project news", "Project later"]:
        dovecot.append(mail_user.name, "Projects", plain(subject))
    # A folder created after the account was connected: what it holds at its first sync is history.
    dovecot.append(mail_user.name, "Archive 2019", plain("Archived long ago"))
    sync(account)
    drain(account)
    assert relayed_subjects(relay) == ["Project later", "Project news"]
    assert Delivery.objects.count() == 2
    assert Message.objects.get(account=account, subject="Project 3").status == Message.Status.HISTORY
    assert Message.objects.get(account=account, subject="Archived long ago").status == Message.Status.HISTORY
