"""Accounts: encrypted credentials, key rotation, and `add_account` / `test_account` against Dovecot."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.db import connection

from imap import slots
from imap.accounts import check_connection, create_account, set_account_password
from imap.models import Account, ConnectionSlot
from mailgate import crypto
from outgoing.models import Service
from tests.servers import procs
from tests.servers.ports import free_port
from tests.servers.waiting import eventually

pytestmark = pytest.mark.django_db

TIMEOUT = 3.0  # seconds a connection test may take in these tests


def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def imap_settings(settings, dovecot):
    """Trust the private Dovecot's self-signed certificate, as production trusts a real CA."""
    settings.MAILGATE_IMAP_CAFILE = dovecot.cafile
    settings.MAILGATE_IMAP_TIMEOUT = TIMEOUT
    return settings


@pytest.fixture
def alice_account(alice, dovecot, mail_user, imap_settings):
    """Alice's account on the private Dovecot over implicit TLS."""
    return create_account(owner=alice, email=f"{mail_user.name}@example.test", host=dovecot.host,
                          port=dovecot.tls_port, security=Account.Security.SSL, username=mail_user.name,
                          password=mail_user.password)


def run_test_account(account_id, *args) -> tuple[int, str, str]:
    """Run `manage.py test_account` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("test_account", str(account_id), *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def raw_row(account) -> str:
    """Every column of the account's row as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Account._meta.db_table} WHERE id = %s", [account.pk])
        return repr(cursor.fetchone())


# ---------------------------------------------------------------- credentials at rest


def test_the_database_row_holds_no_plaintext_password(alice):
    account = create_account(owner=alice, email="alice@example.test", host="imap.example.test",
                             password="correct horse battery staple")
    row = raw_row(account)
    assert "correct horse" not in row and "battery staple" not in row
    assert account.password_encrypted in row  # what is stored is the Fernet token
    assert Account.objects.get(pk=account.pk).get_password() == "correct horse battery staple"


def test_a_password_is_required(alice):
    with pytest.raises(ValidationError) as err:
        create_account(owner=alice, email="alice@example.test", host="imap.example.test", password="")
    assert "password" in err.value.message_dict


def test_unencrypted_imap_is_refused_for_a_remote_host_but_allowed_to_loopback(alice):
    with pytest.raises(ValidationError) as err:
        create_account(owner=alice, email="alice@example.test", host="imap.example.test",
                       security=Account.Security.NONE, password="pw")
    assert "loopback" in str(err.value)
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        account = create_account(owner=alice, email="alice@example.test", host=host,
                                 security=Account.Security.NONE, password="pw")
        assert account.port == 143


def test_rotate_keys_leaves_every_secret_readable_with_the_new_key_alone(alice, settings):
    old, new = new_key(), new_key()
    settings.MAILGATE_FERNET_KEYS = [old]
    account = create_account(owner=alice, email="alice@example.test", host="imap.example.test",
                             password="alice-imap-pw")
    service = Service(owner=alice, kind=Service.Kind.TELEGRAM, name="alerts")
    service.set_secrets({"bot_token": "123:ABC"})
    service.save()

    settings.MAILGATE_FERNET_KEYS = [new, old]  # the new key first, the old one still decrypts
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    assert "re-encrypted 2 secrets" in out.getvalue()

    settings.MAILGATE_FERNET_KEYS = [new]  # the old key is gone
    assert Account.objects.get(pk=account.pk).get_password() == "alice-imap-pw"
    assert Service.objects.get(pk=service.pk).get_secrets() == {"bot_token": "123:ABC"}
    assert "alice-imap-pw" not in raw_row(account)


def test_rotate_keys_marks_an_undecryptable_account_for_reentry_and_keeps_its_token(alice, settings):
    settings.MAILGATE_FERNET_KEYS = [new_key()]
    lost = create_account(owner=alice, email="lost@example.test", host="imap.example.test", password="pw")
    settings.MAILGATE_FERNET_KEYS = [new_key()]  # a key nobody kept
    with pytest.raises(CommandError, match="1 secrets do not decrypt"):
        call_command("rotate_keys", stdout=io.StringIO())
    lost.refresh_from_db()
    assert lost.state == Account.State.NEEDS_CREDENTIALS
    assert "enter it again" in lost.last_error
    with pytest.raises(crypto.CredentialsUnreadable):
        lost.get_password()


def test_a_wrong_key_marks_the_account_and_never_logs_in_with_garbage(alice_account, dovecot, settings):
    settings.MAILGATE_FERNET_KEYS = [new_key()]
    code, out, err = run_test_account(alice_account.pk)
    assert code == 1
    assert "credentials need re-entry" in err
    alice_account.refresh_from_db()
    assert alice_account.state == Account.State.NEEDS_CREDENTIALS
    # Dovecot never saw a login attempt for this user: neither "user=<name>" nor "passwd-file(name,".
    assert not re.search(rf"[<(]{re.escape(alice_account.username)}[>,]", dovecot.log_text())


# ---------------------------------------------------------------- test_account against Dovecot


def test_test_account_logs_in_over_tls_and_counts_the_selectable_folders(alice_account, dovecot):
    for folder in ("Sent", "Archive/2024"):  # "Archive" itself only exists as a \NonExistent parent
        dovecot.create_folder(alice_account.username, folder)
    code, out, err = run_test_account(alice_account.pk, "--list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{alice_account.email}: ok, 3 folders"
    assert lines[1] == "INBOX"  # INBOX first
    assert set(lines[1:]) == {"INBOX", "Sent", "Archive/2024"}
    alice_account.refresh_from_db()
    assert alice_account.state == Account.State.OK and alice_account.last_error == ""


def test_test_account_works_over_starttls_and_plain_loopback(alice_account, dovecot):
    for security in (Account.Security.STARTTLS, Account.Security.NONE):
        Account.objects.filter(pk=alice_account.pk).update(security=security, port=dovecot.port)
        code, out, err = run_test_account(alice_account.pk)
        assert (code, out.strip()) == (0, f"{alice_account.email}: ok, 1 folders"), (security, err)


def test_a_non_ascii_password_logs_in(alice_account, dovecot):
    dovecot.set_password(alice_account.username, "пароль-ü-🔑")
    alice_account.set_password("пароль-ü-🔑")
    alice_account.save()
    assert check_connection(alice_account).ok


def expect_failure(account, reason: str, fragment: str, timeout: float = TIMEOUT):
    started = time.monotonic()
    code, out, err = run_test_account(account.pk, "--timeout", str(timeout))
    elapsed = time.monotonic() - started
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1, err  # one clear line
    assert fragment in err, err
    account.refresh_from_db()
    assert reason in account.last_error
    # The connection attempt itself is cut at the timeout; the slack is for process bookkeeping
    # (recording the state) on a loaded 2-core machine.
    assert elapsed < timeout + 2.0, f"took {elapsed:.2f}s"
    return err


def test_a_wrong_password_says_authentication_failed_and_stops_the_account_after_the_limit(
        alice_account, settings):
    alice_account.set_password("not-the-password")
    alice_account.save()
    for attempt in range(1, settings.MAILGATE_AUTH_FAILURE_LIMIT + 1):
        err = expect_failure(alice_account, "authentication failed", "authentication failed for")
        assert "not-the-password" not in err
        assert alice_account.auth_failures == attempt
    # Retrying a wrong password only gets the account locked by the provider: stop and tell the owner.
    assert alice_account.state == Account.State.AUTH_FAILED
    assert "enter the correct password" in alice_account.last_error


def test_a_closed_port_says_connection_refused(alice_account):
    Account.objects.filter(pk=alice_account.pk).update(port=free_port())
    expect_failure(alice_account, "connection refused", "connection refused by 127.0.0.1:")


def test_tls_against_the_plain_port_says_tls_failure(alice_account, dovecot):
    Account.objects.filter(pk=alice_account.pk).update(port=dovecot.port)  # still security=ssl
    expect_failure(alice_account, "TLS failure", f"TLS failure with 127.0.0.1:{dovecot.port}")


def test_an_untrusted_certificate_says_tls_failure(alice_account, imap_settings):
    imap_settings.MAILGATE_IMAP_CAFILE = ""  # the self-signed certificate is not trusted by default
    expect_failure(alice_account, "TLS failure", "CERTIFICATE_VERIFY_FAILED")


def test_an_unexpected_error_in_a_connection_test_is_logged_and_shown_as_its_type_only(
        alice_account, monkeypatch, caplog):
    def broken_probe(account, timeout):
        raise RuntimeError("a bug, with details not for the page")

    monkeypatch.setattr("imap.accounts._probe", broken_probe)
    report = check_connection(alice_account, timeout=TIMEOUT, record=False)
    assert not report.ok and report.message.endswith(
        f"unexpected error with 127.0.0.1:{alice_account.port}: RuntimeError")
    [record] = [r for r in caplog.records if r.name == "imap.accounts"]
    assert record.exc_info[0] is RuntimeError and f"account {alice_account.pk}" in record.getMessage()


def test_a_connection_test_with_every_connection_in_use_says_so_records_nothing_and_does_not_log_in(
        alice_account, dovecot, settings):
    settings.MAILGATE_SLOT_WAIT = 0.5
    held = [slots.claim_slot(alice_account, "busy") for _ in range(settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT)]
    attempts = dovecot.login_attempts(alice_account.username)
    report = check_connection(alice_account, timeout=TIMEOUT)
    assert not report.ok and report.error.reason == "no free connection slot"
    assert report.message == (f"no free connection slot: all {len(held)} connections of this account are in use; "
                              f"try again in a moment")
    assert 0.5 <= report.seconds < TIMEOUT
    alice_account.refresh_from_db()
    assert (alice_account.state, alice_account.last_error) == (Account.State.NEW, "")

    held[0].release()
    assert check_connection(alice_account, timeout=TIMEOUT).ok
    eventually(lambda: dovecot.login_attempts(alice_account.username) > attempts, 10, "the second test's login logged")
    assert dovecot.login_attempts(alice_account.username) == attempts + 1  # the refused test made none
    assert ConnectionSlot.objects.filter(account=alice_account).exclude(holder="").count() == len(held) - 1


def test_a_connection_test_of_an_account_stopped_after_failed_logins_does_not_log_in_again(
        alice_account, dovecot):
    stopped = "authentication failed for x (stopped after 3 failed logins; enter the correct password)"
    Account.objects.filter(pk=alice_account.pk).update(state=Account.State.AUTH_FAILED, auth_failures=3,
                                                       last_error=stopped)
    alice_account.refresh_from_db()
    attempts = dovecot.login_attempts(alice_account.username)
    code, out, err = run_test_account(alice_account.pk)
    assert (code, err.strip()) == (1, f"{alice_account.email}: {stopped}")
    alice_account.refresh_from_db()
    assert (alice_account.state, alice_account.auth_failures) == (Account.State.AUTH_FAILED, 3)
    # Re-entering the password clears the stop; that test is the first login since.
    set_account_password(alice_account, alice_account.get_password())
    assert check_connection(alice_account, timeout=TIMEOUT).ok
    eventually(lambda: dovecot.login_attempts(alice_account.username) > attempts, 10, "the next test's login logged")
    assert dovecot.login_attempts(alice_account.username) == attempts + 1


def test_a_host_that_does_not_resolve_says_so(alice_account):
    Account.objects.filter(pk=alice_account.pk).update(host="imap.does-not-exist.invalid")
    expect_failure(alice_account, "name not resolved", "name not resolved: imap.does-not-exist.invalid")


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word (no IMAP greeting)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_never_answers_times_out_within_the_configured_timeout(alice_account, silent_server):
    Account.objects.filter(pk=alice_account.pk).update(port=silent_server)
    started = time.monotonic()
    expect_failure(alice_account, "timeout", "timeout talking to 127.0.0.1:", timeout=1.0)
    assert time.monotonic() - started >= 0.9
    alice_account.refresh_from_db()
    report = check_connection(alice_account, timeout=1.0)
    # The floor is the point (it waited the configured second); the ceiling only says "bounded",
    # with room for a loaded 2-core machine.
    assert report.error.reason == "timeout" and 0.9 <= report.seconds < 3


def test_an_unknown_account_id_is_a_clear_error():
    with pytest.raises(CommandError, match="no account with id 999999"):
        call_command("test_account", "999999")


# ---------------------------------------------------------------- add_account


def test_add_account_reads_the_password_from_stdin_and_prints_the_id(alice, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret pass\n"))
    out = io.StringIO()
    call_command("add_account", "--owner", "alice", "--email", "alice@example.test",
                 "--host", "imap.example.test", stdout=out)
    account = Account.objects.get(pk=int(out.getvalue()))
    assert (account.owner, account.username, account.port, account.security) == (
        alice, "alice@example.test", 993, Account.Security.SSL)
    assert account.get_password() == "s3cret pass"


def test_add_account_reads_a_password_file(alice, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    out = io.StringIO()
    call_command("add_account", "--owner", "alice", "--email", "a@example.test", "--host", "127.0.0.1",
                 "--security", "starttls", "--password-file", str(secret), "--folder", "INBOX", stdout=out)
    account = Account.objects.get(pk=int(out.getvalue()))
    assert account.get_password() == "from-a-file"
    assert (account.port, account.folders_include) == (143, ["INBOX"])


def test_add_account_refuses_a_mailbox_already_connected(alice, monkeypatch):
    def add():
        monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
        call_command("add_account", "--owner", "alice", "--email", "a@example.test", "--host", "imap.example.test",
                     "--display-name", "Work", stdout=io.StringIO())

    add()
    with pytest.raises(CommandError) as refused:
        add()
    assert str(refused.value) == "account not added: This mailbox is already connected as \u201cWork\u201d."
    assert Account.objects.count() == 1


def test_add_account_explains_what_is_wrong(alice, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("add_account", "--owner", "nobody", "--email", "a@example.test", "--host", "h")
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))
    with pytest.raises(CommandError, match="security: Unencrypted IMAP is only allowed to a loopback host"):
        call_command("add_account", "--owner", "alice", "--email", "a@example.test",
                     "--host", "imap.example.test", "--security", "none")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="password: A password is required"):
        call_command("add_account", "--owner", "alice", "--email", "a@example.test", "--host", "h")
    assert not Account.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_account_commands_work_from_a_shell(alice, dovecot, mail_user):
    """add_account then test_account as real processes, the password piped on stdin."""
    env = procs.django_env(MAILGATE_IMAP_CAFILE=dovecot.cafile)

    def manage(*args, stdin=""):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=procs.ROOT, env=env, input=stdin,
                              capture_output=True, text=True, timeout=60)

    added = manage("add_account", "--owner", "alice", "--email", f"{mail_user.name}@example.test",
                   "--host", dovecot.host, "--port", str(dovecot.tls_port), "--username", mail_user.name,
                   stdin=mail_user.password + "\n")
    assert added.returncode == 0, added.stderr
    account_id = int(added.stdout.strip())
    tested = manage("test_account", str(account_id))
    assert (tested.returncode, tested.stdout.strip()) == (0, f"{mail_user.name}@example.test: ok, 1 folders")
    assert mail_user.password not in added.stdout + added.stderr + tested.stdout + tested.stderr


@pytest.mark.django_db
def test_a_new_account_starts_its_first_sync_of_every_folder(alice, admin_client, tmp_path,
                                                               django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    (tmp_path / "pw").write_text("pw\n")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("add_account", "--owner", "alice", "--email", "a@example.test", "--host", "127.0.0.1",
                     "--security", "none", "--password-file", str(tmp_path / "pw"), stdout=io.StringIO())
    account = Account.objects.get(email="a@example.test")
    assert [task.name() for task in OrmQ.objects.all()] == [f"sync-account:{account.pk}"]

    with django_capture_on_commit_callbacks(execute=True):  # the same from the admin's add form
        response = admin_client.post(reverse("admin:imap_account_add"), {
            "display_name": "B", "email": "b@example.test", "owner": alice.pk, "host": "127.0.0.1", "port": "143",
            "security": "none", "username": "b", "password": "pw", "folders_include": "[]",
            "folders_exclude": "[]", "push_folders": "[]", "enabled": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    # No server answers there: the admin's save tests the connection first, so the account is kept
    # disabled and nothing is synced (a passing test enables and syncs it:
    # tests/test_account_setup.py::test_the_admin_saves_an_account_whose_test_fails_disabled_...).
    second = Account.objects.get(email="b@example.test")
    assert not second.enabled
    assert [task.name() for task in OrmQ.objects.all()] == [f"sync-account:{account.pk}"]
