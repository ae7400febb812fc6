"""The IDLE manager as it runs in production: `manage.py idle` subprocesses against the real Dovecot.

Each test starts its own managers (and a `qcluster` worker where mail must be stored) on the test
database; every process is stopped by the `processes` fixture, by PID. Cross-process state is
waited for by polling the database or `doveadm who` with a deadline.
"""

from __future__ import annotations

import itertools
import signal
import time

from datetime import timedelta

import pytest
from django.db.models import Max
from django.utils import timezone

from imap import errors, slots
from imap.accounts import create_account, set_account_password
from imap.models import Account, ConnectionSlot, Folder, IdleManager, IdleSession, MessageLocation
from pipeline.models import Message
from tests.servers import procs
from tests.servers.dovecot import Dovecot
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LEASE_SECONDS = 3
_names = itertools.count(1)


class Processes:
    def __init__(self):
        self.started: list = []

    def start(self, args, log_name, **env):
        proc = procs.start(args, f"{log_name}-{next(_names)}", **env)
        self.started.append(proc)
        return proc

    def stop_all(self):
        for proc in reversed(self.started):
            procs.stop(proc, signal.SIGTERM, timeout=10)


@pytest.fixture
def processes():
    started = Processes()
    yield started
    started.stop_all()


# What a manager needs in these tests, for `manage.py idle` and daphne with MAILGATE_IDLE=1 alike.
def manager_env(dovecot) -> dict:
    return {"MAILGATE_IDLE_LEASE_SECONDS": LEASE_SECONDS, "MAILGATE_IDLE_POLL": "0.5", "MAILGATE_IMAP_TIMEOUT": "5",
            "MAILGATE_IMAP_CAFILE": dovecot.cafile}


def start_manager(processes, dovecot, name="idle", **env):
    return processes.start(["manage.py", "idle"], name, **{**manager_env(dovecot), **env})


def start_worker(processes, dovecot):
    # The Procfile's worker: a group SIGTERM at teardown stops it cleanly (a bare qcluster hangs).
    return processes.start(["manage.py", "worker"], "worker", MAILGATE_IMAP_CAFILE=dovecot.cafile,
                           MAILGATE_IMAP_TIMEOUT="5")


def new_user(dovecot, prefix="idle"):
    n = time.monotonic_ns()
    return dovecot.add_user(f"{prefix}{n}", f"pw-{n}")


def account_for(owner, dovecot, user, *, tls=False) -> Account:
    if tls:
        return create_account(owner=owner, email=f"{user.name}@example.test", host="127.0.0.1",
                              port=dovecot.tls_port, security=Account.Security.SSL, username=user.name,
                              password=user.password)
    return create_account(owner=owner, email=f"{user.name}@example.test", host="127.0.0.1", port=dovecot.port,
                          security=Account.Security.NONE, username=user.name, password=user.password)


def message(message_id: str) -> bytes:
    return (f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {message_id}\r\n"
            f"Message-ID: <{message_id}@example.test>\r\n\r\nHello.\r\n").encode()


def session(account) -> IdleSession | None:
    return IdleSession.objects.filter(pk=account.pk).first()


def connected(account) -> bool:
    s = session(account)
    return bool(s and s.connected)


def sessions_on_server(dovecot, users) -> dict[str, int]:
    names = {u.name for u in users}
    return {name: count for name, count in dovecot.who() if name in names}


def stored(account, message_id: str) -> int:
    return Message.objects.filter(account=account, message_id__contains=message_id).count()


def queue_drained(account) -> bool:
    return not Folder.objects.filter(account=account).exclude(sync_pending="").exists()


# ---------------------------------------------------------------- push, kick, restart

def test_a_push_is_stored_and_mail_sent_while_disconnected_is_caught_up_exactly_once(alice, processes):
    dovecot = Dovecot.start()  # private: this test restarts it
    try:
        user = new_user(dovecot)
        account = account_for(alice, dovecot, user, tls=True)
        start_worker(processes, dovecot)
        start_manager(processes, dovecot)
        eventually(lambda: connected(account), 20, "account idling")
        eventually(lambda: Folder.objects.filter(account=account, name="INBOX").exists() and queue_drained(account),
                   20, "initial catch-up sync done")

        # A push: queued within a second of Dovecot's notification, then stored by the worker.
        appended = time.time()
        dovecot.append(user.name, "INBOX", message("pushed"))
        # Another sync (the account's first full sync, queued when it was added) may store the
        # message before Dovecot's push arrives: wait for both events the assertions are about.
        eventually(lambda: stored(account, "pushed") and session(account).last_push_at, 15,
                   "pushed message stored and the push recorded")
        push_at = session(account).last_push_at.timestamp()
        assert push_at - appended < 1.5  # Dovecot itself notifies ~0.5 s after the APPEND

        # Kicked: the manager reconnects, and what arrived meanwhile is caught up once.
        reconnects = session(account).reconnect_count
        dovecot.kick(user.name)
        dovecot.append(user.name, "INBOX", message("while-kicked"))
        eventually(lambda: session(account).reconnect_count > reconnects and connected(account), 15,
                   "reconnected after the kick")
        eventually(lambda: stored(account, "while-kicked"), 15, "message from the kick window stored")

        # Server restart: the same, with the connection refused for a while.
        reconnects = session(account).reconnect_count
        dovecot.restart()
        dovecot.append(user.name, "INBOX", message("after-restart"))
        eventually(lambda: session(account).reconnect_count > reconnects and connected(account), 20,
                   "reconnected after the restart")
        eventually(lambda: stored(account, "after-restart"), 15, "message from the restart window stored")

        # A queued sync clears its marker when it starts, so "queue drained" alone races the worker's
        # LOGOUT; the server's own session count tells when every sync is over and only IDLE remains.
        # Two IDLE connections for one account would keep this at 2 and fail it.
        eventually(lambda: queue_drained(account) and sessions_on_server(dovecot, [user]) == {user.name: 1},
                   15, "all syncs done, one IDLE session left")
        for message_id in ("pushed", "while-kicked", "after-restart"):
            assert stored(account, message_id) == 1, message_id
        assert MessageLocation.objects.filter(account=account).count() == 3
    finally:
        processes.stop_all()
        dovecot.stop()


def test_the_manager_started_by_the_web_server_with_MAILGATE_IDLE_stores_a_push_and_logs_out_on_exit(
        alice, dovecot, processes, start_web):
    """The AppConfig.ready path (imap/idle_autostart.py): no `manage.py idle`, the manager runs
    in a thread of daphne."""
    user = new_user(dovecot, "webidle")
    account = account_for(alice, dovecot, user)
    start_worker(processes, dovecot)
    web = start_web(MAILGATE_IDLE="1", **manager_env(dovecot))
    eventually(lambda: connected(account), 20, "account idling")
    assert int(session(account).lease_owner.split(":")[1]) == web.proc.pid  # daphne's own thread
    eventually(lambda: Folder.objects.filter(account=account, name="INBOX").exists() and queue_drained(account),
               20, "initial catch-up sync done")

    appended = timezone.now()
    dovecot.append(user.name, "INBOX", message("pushed-to-daphne"))
    eventually(lambda: stored(account, "pushed-to-daphne") and session(account).last_push_at, 15,
               "pushed message stored and the push recorded")
    assert session(account).last_push_at >= appended

    # SIGTERM: daphne exits, and its atexit hook logs the manager out and releases the lease.
    assert procs.stop(web.proc, signal.SIGTERM, timeout=10) == 0
    assert session(account).lease_owner == "" and not session(account).connected
    eventually(lambda: not sessions_on_server(dovecot, [user]), 5, "the IDLE session logged out")
    assert "Traceback" not in web.log()


def test_the_idle_connection_keeps_its_slot_alive_so_others_get_only_what_is_left(
        alice, dovecot, processes, settings):
    """Its slot is renewed for as long as it idles; without that it would expire after one TTL and
    a sync plus a UI action would make three connections under a cap of two."""
    settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT = 2
    ttl = 2
    user = new_user(dovecot, "slot")
    account = account_for(alice, dovecot, user)
    start_manager(processes, dovecot, MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT="2", MAILGATE_SLOT_TTL=str(ttl))
    eventually(lambda: connected(account), 20, "account idling")
    reconnects = session(account).reconnect_count
    idle_slot = ConnectionSlot.objects.exclude(holder="").get(account=account)
    assert idle_slot.purpose == "idle INBOX"
    first_expiry = idle_slot.expires_at

    # Renewed after the claim's own expiry has passed: the same holder, still unexpired.
    def renewed_past_first_expiry():
        row = ConnectionSlot.objects.get(pk=idle_slot.pk)
        return (row.holder == idle_slot.holder and row.expires_at > first_expiry + timedelta(seconds=ttl)
                and row.expires_at > timezone.now())

    eventually(renewed_past_first_expiry, 10 * ttl, "IDLE slot renewed past its first expiry")
    sync_slot = slots.claim_slot(account, "sync", ttl=ttl)
    with pytest.raises(errors.TooManyConnections):
        slots.claim_slot(account, "write-back", ttl=ttl)
    sync_slot.release()
    assert connected(account) and session(account).reconnect_count == reconnects
    assert sessions_on_server(dovecot, [user]) == {user.name: 1}


def test_a_connection_whose_slot_was_taken_by_someone_else_reconnects_with_a_slot_of_its_own(
        alice, dovecot, processes):
    # As after a database outage longer than the TTL: the slot expired and another process took it.
    user = new_user(dovecot, "slotlost")
    account = account_for(alice, dovecot, user)
    start_manager(processes, dovecot)
    eventually(lambda: connected(account), 20, "account idling")
    reconnects = session(account).reconnect_count
    ConnectionSlot.objects.filter(account=account, purpose="idle INBOX").update(holder="elsewhere:1:taken")

    def idling_on_a_new_slot():
        return (connected(account) and session(account).reconnect_count > reconnects
                and ConnectionSlot.objects.filter(account=account, purpose="idle INBOX")
                .exclude(holder="elsewhere:1:taken").exists())

    eventually(idling_on_a_new_slot, 20, "reconnected with its own slot")
    eventually(lambda: sessions_on_server(dovecot, [user]) == {user.name: 1}, 5, "one IDLE session left")


# ---------------------------------------------------------------- many managers

def test_two_managers_share_twenty_accounts_and_the_survivor_takes_over_then_exits_cleanly(
        alice, dovecot, processes):
    users = [new_user(dovecot, "pair") for _ in range(20)]
    accounts = [account_for(alice, dovecot, u) for u in users]
    first = start_manager(processes, dovecot, "idle-a")
    second = start_manager(processes, dovecot, "idle-b")

    def all_idling_once():
        on_server = sessions_on_server(dovecot, users)
        assert all(count == 1 for count in on_server.values()), on_server  # never two per account
        return (len(on_server) == 20 and IdleSession.objects.filter(pk__in=[a.pk for a in accounts],
                                                                       connected=True).count() == 20)

    eventually(all_idling_once, 30, "20 accounts idling once each", interval=0.2)
    owners = lambda: set(IdleSession.objects.values_list("lease_owner", flat=True))  # noqa: E731
    eventually(lambda: len(owners()) == 2 and all_idling_once(), 20, "both managers holding accounts", interval=0.2)
    by_pid = {int(name.split(":")[1]): name for name in owners()}
    assert set(by_pid) == {first.pid, second.pid}

    # SIGKILL: no goodbye, the leases expire and the other manager takes every account.
    procs.stop(first, signal.SIGKILL)
    survivor = by_pid[second.pid]
    killed_at = time.monotonic()
    eventually(lambda: owners() == {survivor} and all_idling_once(), LEASE_SECONDS + 15,
               "survivor holds all 20", interval=0.2)
    assert time.monotonic() - killed_at < LEASE_SECONDS + 10

    # SIGTERM: DONE, LOGOUT, leases released, exit within a few seconds.
    started = time.monotonic()
    assert procs.stop(second, signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 5
    assert set(IdleSession.objects.values_list("lease_owner", flat=True)) == {""}
    assert not IdleSession.objects.filter(connected=True).exists()
    assert not IdleManager.objects.filter(name=survivor).exists()
    eventually(lambda: not sessions_on_server(dovecot, users), 5, "every IDLE session logged out")


# ---------------------------------------------------------------- account changes

def test_the_manager_follows_added_disabled_changed_and_unreadable_accounts(alice, dovecot, processes):
    first_user, second_user, third_user = (new_user(dovecot, "change") for _ in range(3))
    first = account_for(alice, dovecot, first_user)
    start_manager(processes, dovecot)
    eventually(lambda: connected(first), 20, "first account idling")

    # Added while running: connected within 10 s.
    added_at = time.monotonic()
    second = account_for(alice, dovecot, second_user)
    eventually(lambda: connected(second), 10, "added account idling")
    assert time.monotonic() - added_at < 10

    # Disabled: logged out within 10 s.
    first.enabled = False
    first.save()
    # The manager logs out first and then releases the lease row: wait for both.
    eventually(lambda: first_user.name not in sessions_on_server(dovecot, [first_user])
               and session(first).lease_owner == "", 10, "disabled account logged out and released")

    # New password: the manager reconnects with it.
    since = session(second).idling_since
    dovecot.set_password(second_user.name, "a brand new password")
    set_account_password(Account.objects.get(pk=second.pk), "a brand new password")
    eventually(lambda: connected(second) and session(second).idling_since > since, 10, "reconnected with the new password")
    assert session(second).last_error == ""

    # A password no key decrypts: NEEDS_CREDENTIALS, and no reconnect loop.
    third = account_for(alice, dovecot, third_user)
    eventually(lambda: connected(third), 10, "third account idling")
    Account.objects.filter(pk=third.pk).update(password_encrypted="not a fernet token",
                                               config_version=third.config_version + 1)
    eventually(lambda: Account.objects.get(pk=third.pk).state == Account.State.NEEDS_CREDENTIALS, 10,
               "account marked as needing credentials")
    eventually(lambda: session(third).lease_owner == "", 5, "its lease released")
    reconnects = IdleSession.objects.aggregate(n=Max("reconnect_count"))["n"]
    time.sleep(2 * 0.5 + 0.5)  # a few manager polls: nothing may retry (absence of events, bounded)
    assert IdleSession.objects.aggregate(n=Max("reconnect_count"))["n"] == reconnects
    assert third_user.name not in sessions_on_server(dovecot, [third_user])
    assert connected(second)
