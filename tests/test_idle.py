"""IDLE manager, unit level: backoff, lease compare-and-set, fair share, push parsing, autostart.

The real-server behaviour (pushes, reconnects, two managers, SIGTERM) is in test_idle_client.py and
test_idle_manager.py.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from imap import idle_autostart, leases
from imap.accounts import create_account
from imap.idle.client import push_kinds
from imap.idle.watcher import RECONNECT_MAX, backoff_delay, idle_connection_limit
from imap.models import Account, IdleManager, IdleSession


@pytest.fixture
def accounts(alice):
    return [create_account(owner=alice, email=f"a{i}@example.test", host="127.0.0.1", port=143,
                           security=Account.Security.NONE, password="pw") for i in range(4)]


# ---------------------------------------------------------------- backoff

def test_backoff_doubles_per_attempt_with_jitter_between_half_and_all():
    rng = random.Random(7)
    for attempt, full in [(0, 1), (1, 2), (2, 4), (5, 32)]:
        delays = [backoff_delay(attempt, rng=rng) for _ in range(200)]
        assert min(delays) >= full / 2 and max(delays) <= full
        assert max(delays) - min(delays) > full / 4  # jittered, not lockstep


def test_backoff_never_exceeds_five_minutes_even_after_many_failures():
    assert all(RECONNECT_MAX / 2 <= backoff_delay(n) <= RECONNECT_MAX for n in (9, 10, 50, 10_000))
    assert RECONNECT_MAX == 300


def test_idle_leaves_one_connection_of_the_account_for_sync(settings):
    settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT = 3
    assert idle_connection_limit() == 2
    settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT = 1
    assert idle_connection_limit() == 1


# ---------------------------------------------------------------- push parsing

def test_exists_is_new_mail_and_expunge_or_fetch_are_flag_changes():
    assert push_kinds([b"3 EXISTS"]) == (True, False, False)
    assert push_kinds([b"2 EXPUNGE"]) == (False, True, False)
    assert push_kinds([b"1 FETCH (FLAGS (\\Seen))"]) == (False, True, False)
    assert push_kinds([b"OK Still here", b"1 RECENT"]) == (False, False, False)


def test_bye_is_reported_even_after_a_push_in_the_same_packet():
    assert push_kinds([b"4 EXISTS", b"BYE Server shutting down."]) == (True, False, True)
    assert push_kinds([b"* BYE Disconnected for inactivity."]) == (False, False, True)


# ---------------------------------------------------------------- leases

@pytest.mark.django_db
def test_a_lease_goes_to_exactly_one_manager(accounts):
    ids = [a.pk for a in accounts]
    won_a = leases.claim("manager-a", ids, limit=10)
    won_b = leases.claim("manager-b", ids, limit=10)
    assert sorted(won_a) == sorted(ids)
    assert won_b == []
    assert set(IdleSession.objects.values_list("lease_owner", flat=True)) == {"manager-a"}


@pytest.mark.django_db(transaction=True)
def test_managers_claiming_at_once_split_the_accounts_without_error_or_overlap(alice):
    import threading

    from django.db import connection

    ids = [create_account(owner=alice, email=f"many{i}@example.test", host="127.0.0.1", port=143,
                          security=Account.Security.NONE, password="pw").pk for i in range(60)]
    won: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def manager(name: str, seed: int):
        order = ids[:]
        random.Random(seed).shuffle(order)  # each manager lists the accounts in its own order
        mine: list[int] = []
        try:
            start.wait()
            while got := leases.claim(name, order, limit=7):
                mine += got
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            won[name] = mine
            connection.close()

    threads = [threading.Thread(target=manager, args=(f"manager-{n}", n)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    claimed = [pk for mine in won.values() for pk in mine]
    assert sorted(claimed) == sorted(ids)  # every account taken, none by two managers
    owners = dict(IdleSession.objects.values_list("pk", "lease_owner"))
    assert all(owners[pk] == name for name, mine in won.items() for pk in mine)


@pytest.mark.django_db
def test_a_manager_claims_no_more_than_its_limit(accounts):
    won = leases.claim("manager-a", [a.pk for a in accounts], limit=3)
    assert len(won) == 3
    assert IdleSession.objects.filter(lease_owner="manager-a").count() == 3


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_renew_it(accounts):
    account = accounts[0]
    assert leases.claim("manager-a", [account.pk], limit=1) == [account.pk]
    IdleSession.objects.filter(pk=account.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1),
                                                      connected=True)
    assert leases.claim("manager-b", [account.pk], limit=1) == [account.pk]
    session = IdleSession.objects.get(pk=account.pk)
    assert session.lease_owner == "manager-b"
    assert session.connected is False  # the dead holder's status is not carried over
    assert leases.renew("manager-a") == set()
    assert leases.renew("manager-b") == {account.pk}


@pytest.mark.django_db
def test_a_live_lease_is_not_taken_over(accounts):
    account = accounts[0]
    leases.claim("manager-a", [account.pk], limit=1)
    assert leases.claim("manager-b", [account.pk], limit=1) == []


@pytest.mark.django_db
def test_renewal_pushes_the_expiry_forward(accounts, settings):
    settings.MAILGATE_IDLE_LEASE_SECONDS = 30
    account = accounts[0]
    leases.claim("manager-a", [account.pk], limit=1)
    IdleSession.objects.filter(pk=account.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=1))
    leases.renew("manager-a")
    expires = IdleSession.objects.get(pk=account.pk).lease_expires_at
    assert expires > timezone.now() + timedelta(seconds=25)


@pytest.mark.django_db
def test_released_leases_can_be_claimed_at_once(accounts):
    ids = [a.pk for a in accounts]
    leases.claim("manager-a", ids, limit=10)
    leases.release("manager-a", ids[:2])
    assert sorted(leases.claim("manager-b", ids, limit=10)) == sorted(ids[:2])


@pytest.mark.django_db
def test_status_writes_need_the_lease(accounts):
    account = accounts[0]
    leases.claim("manager-a", [account.pk], limit=1)
    assert leases.record_connected("manager-b", account.pk) is False
    assert leases.record_connected("manager-a", account.pk) is True
    assert leases.record_disconnected("manager-a", account.pk, "connection lost: kicked") is True
    session = IdleSession.objects.get(pk=account.pk)
    assert (session.connected, session.last_error, session.reconnect_count) == (False, "connection lost: kicked", 1)


def test_fair_share_splits_accounts_evenly_with_a_little_slack():
    assert leases.fair_share(20, 2) == 11
    assert leases.fair_share(20, 1) == 21
    assert leases.fair_share(1000, 3) == 334 + 16
    assert leases.fair_share(0, 2) == 0
    assert leases.fair_share(5, 0) == 6  # no heartbeat yet: count ourselves


@pytest.mark.django_db
def test_only_managers_with_a_fresh_heartbeat_count_as_live(settings):
    settings.MAILGATE_IDLE_LEASE_SECONDS = 30
    leases.beat("host:1:aa")
    IdleManager.objects.create(name="host:2:bb", host="host", pid=2,
                               heartbeat_at=timezone.now() - timedelta(seconds=31))
    assert leases.live_managers() == 1


@pytest.mark.django_db
def test_disabled_and_stopped_accounts_are_not_wanted(accounts):
    a, b, c, d = accounts
    Account.objects.filter(pk=b.pk).update(enabled=False)
    Account.objects.filter(pk=c.pk).update(state=Account.State.NEEDS_CREDENTIALS)
    Account.objects.filter(pk=d.pk).update(push_folders=["INBOX", "Lists"])
    wanted = leases.wanted_accounts()
    assert set(wanted) == {a.pk, d.pk}
    assert wanted[d.pk][1] == ("INBOX", "Lists")


# ---------------------------------------------------------------- config_version

@pytest.mark.django_db
def test_saving_a_new_host_or_password_bumps_config_version(accounts):
    account = Account.objects.get(pk=accounts[0].pk)
    version = account.config_version
    account.display_name = "renamed"
    account.save()
    assert account.config_version == version  # not a connection setting
    account.host = "localhost"
    account.save()
    assert account.config_version == version + 1
    account.set_password("new secret")
    account.save(update_fields=["password_encrypted"])
    assert Account.objects.get(pk=account.pk).config_version == version + 2


# ---------------------------------------------------------------- autostart

@pytest.mark.parametrize("argv, expected", [
    (["/usr/bin/daphne", "mailgate.asgi:application"], True),
    (["/venv/lib/python3.11/site-packages/daphne/__main__.py"], True),
    (["gunicorn"], True),
    (["manage.py", "migrate"], False),
    (["manage.py", "qcluster"], False),
    (["manage.py", "shell"], False),
    (["/venv/bin/pytest"], False),
])
def test_the_manager_thread_starts_only_under_a_server_program(settings, argv, expected):
    settings.MAILGATE_IDLE = True
    assert idle_autostart.should_start(argv) is expected


def test_the_manager_thread_never_starts_when_idle_is_off(settings):
    settings.MAILGATE_IDLE = False
    assert idle_autostart.should_start(["daphne"]) is False


def test_a_database_error_after_interpreter_shutdown_still_reaches_the_awaiting_coroutine():
    """At exit the manager runs its last database calls on plain threads; their errors must reach
    the coroutine (an unbound exception variable would leave it waiting forever)."""
    import asyncio

    from imap.idle.manager import _db_call_into

    def fails():
        raise ValueError("database gone")

    async def scenario():
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        import threading

        threading.Thread(target=_db_call_into, args=(loop, future, fails, (), {})).start()
        return await asyncio.wait_for(future, 5)

    with pytest.raises(ValueError, match="database gone"):
        asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_stopped_manager_leaves_no_database_connection_open_behind_it():
    """Its pool threads end with the manager; a connection they left open would stay on the
    server (an idle PostgreSQL backend) until garbage collection."""
    import asyncio
    import gc
    import threading

    from django.db import connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    from imap.idle.manager import Manager

    def open_connections_of_other_threads():
        ours = set(map(id, connections.all()))
        return [w for w in gc.get_objects()
                if isinstance(w, BaseDatabaseWrapper) and w.connection is not None and id(w) not in ours]

    # Earlier tests' threads may have left theirs (garbage not yet collected): only new ones count.
    before = set(map(id, open_connections_of_other_threads()))
    manager = Manager("pool-test")
    thread = threading.Thread(target=lambda: asyncio.run(manager.run()))
    thread.start()
    assert manager.started.wait(10)
    manager.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert [w for w in open_connections_of_other_threads() if id(w) not in before] == []
