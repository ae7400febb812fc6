"""OAuth2 accounts in the running system: `manage.py idle` and `manage.py worker` subprocesses sign in
to Dovecot's oauth2 passdb with XOAUTH2 or OAUTHBEARER; access tokens that live seconds are
refreshed across pushes; a revoked grant stops the account without a retry storm and Reconnect
brings it back without losing or duplicating a message. The local provider counts its requests."""

from __future__ import annotations

import itertools
import signal

import pytest

from imap import errors
from imap.models import Account, Folder, IdleManager, IdleSession, OAuthGrant
from imap.oauth import grants, providers, tokens
from imap.sync import sync_account_now
from imap.tasks import sync_all_accounts
from pipeline.models import Message
from tests.servers import procs
from tests.servers.dovecot import Dovecot
from tests.servers.oauth_fixtures import logins, oauth_env, oauth_mail, signed_in
from tests.servers.waiting import eventually

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

_logs = itertools.count(1)
_mails = itertools.count(500)


@pytest.fixture
def system(provider):
    """Factory: start an IDLE manager and a worker for the OAuth Dovecot `server`; stopped after."""
    started = []

    def start(server):
        env = {**oauth_env(provider, server), "MAILGATE_IDLE_LEASE_SECONDS": "3", "MAILGATE_IDLE_POLL": "0.5",
               "MAILGATE_IMAP_TIMEOUT": "5"}
        for args in (["manage.py", "worker"], ["manage.py", "idle"]):
            started.append(procs.start(args, f"oauth-{args[1]}-{next(_logs)}", **env))

    yield start
    for proc in reversed(started):
        procs.stop(proc, signal.SIGTERM, timeout=10)


def idle_session(account) -> IdleSession | None:
    return IdleSession.objects.filter(pk=account.pk).first()


def idling(account) -> bool:
    session = idle_session(account)
    return bool(session and session.connected and session.idling_since)


def stored(account, n: int) -> int:
    # Contains: the standardize stage stores the Message-ID without its angle brackets.
    return Message.objects.filter(account=account, message_id__contains=f"oauth-{n}@example.test").count()


def push_and_wait(server, user, account) -> int:
    """APPEND one message and wait until the push is recorded and the message stored."""
    n = next(_mails)
    before = idle_session(account).last_push_at
    server.append(user, "INBOX", oauth_mail(n))
    eventually(lambda: stored(account, n) and idle_session(account).last_push_at != before, 20,
               f"message {n} pushed and stored")
    return n


def first_sync_done(account) -> bool:
    return Folder.objects.filter(account=account, name="INBOX", last_synced_at__isnull=False).exists() and \
        not Folder.objects.filter(account=account).exclude(sync_pending="").exists()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_the_idle_manager_signs_in_with_oauth_and_a_push_is_stored(
        alice, settings, provider, oauth_dovecot, generic, oauth_user, system, mechanism):
    server = oauth_dovecot
    if mechanism == "OAUTHBEARER":  # a server that offers only OAUTHBEARER gets it
        server = Dovecot.start(oauth2_introspection_url=provider.url("/introspect"),
                               oauth2_mechanisms=("oauthbearer",))
        server.add_user(oauth_user, "unused")
        settings.MAILGATE_OAUTH_GENERIC_IMAP_PORT = server.port
    try:
        account = signed_in(alice, provider, providers.get("generic"), oauth_user)
        system(server)
        eventually(lambda: idling(account), 20, "the account idling")
        eventually(lambda: first_sync_done(account), 20, "first sync done")
        n = push_and_wait(server, oauth_user, account)
        assert stored(account, n) == 1
        assert logins(server, oauth_user, mechanism) >= 2  # IDLE and the worker's sync
        assert logins(server, oauth_user, "XOAUTH2" if mechanism == "OAUTHBEARER" else "OAUTHBEARER") == 0
    finally:
        if server is not oauth_dovecot:
            server.stop()


def test_tokens_that_live_seconds_are_refreshed_while_idle_keeps_delivering_pushes(
        alice, provider, oauth_dovecot, generic, oauth_user, system):
    provider.access_lifetime = 3.0
    account = signed_in(alice, provider, generic, oauth_user, expires_in=3)
    system(oauth_dovecot)
    eventually(lambda: idling(account), 20, "the account idling")
    eventually(lambda: first_sync_done(account), 20, "first sync done")
    reconnects = idle_session(account).reconnect_count
    pushed = []
    for _round in range(3):
        # Every token handed out so far has expired: the worker's next login needs a new one.
        eventually(lambda: provider.live_access_tokens(oauth_user) == 0, 10, "the access tokens expired")
        pushed.append(push_and_wait(oauth_dovecot, oauth_user, account))
    assert [stored(account, n) for n in pushed] == [1, 1, 1]
    assert provider.refresh_requests[oauth_user] >= 3  # at least one per round
    grant = OAuthGrant.objects.get(pk=account.pk)
    assert grant.token_version == 1 + provider.refresh_requests[oauth_user]  # each refresh written once
    assert not provider.grants[oauth_user].revoked  # no rotated refresh token was ever reused
    session = idle_session(account)
    assert session.connected and session.reconnect_count == reconnects  # one IDLE session throughout


def test_a_revoked_grant_stops_the_account_without_a_retry_storm_and_reconnect_loses_and_duplicates_nothing(
        alice, provider, oauth_dovecot, generic, oauth_user, system):
    account = signed_in(alice, provider, generic, oauth_user)
    system(oauth_dovecot)
    eventually(lambda: idling(account), 20, "the account idling")
    eventually(lambda: first_sync_done(account), 20, "first sync done")
    kept = push_and_wait(oauth_dovecot, oauth_user, account)

    provider.revoke(oauth_user)
    oauth_dovecot.append(oauth_user, "INBOX", oauth_mail(900))  # arrives while signed out
    oauth_dovecot.kick(oauth_user)  # the IDLE connection must sign in again: refused
    eventually(lambda: Account.objects.get(pk=account.pk).state == Account.State.SIGN_IN_EXPIRED, 20,
               "the account stopped at sign-in expired")
    asked = len(provider.token_requests)
    assert provider.refresh_requests[oauth_user] == 1  # one refresh, refused: invalid_grant

    # Everything that would retry does so without asking the provider again.
    beat = IdleManager.objects.order_by("-heartbeat_at").values_list("heartbeat_at", flat=True).first()
    eventually(lambda: IdleManager.objects.filter(heartbeat_at__gt=beat).exists(), 10, "a manager heartbeat")
    sync_all_accounts()
    for _ in range(3):
        assert sync_account_now(Account.objects.get(pk=account.pk), ignore_backoff=True).errors
        with pytest.raises(errors.SignInExpired):
            tokens.access_token(account.pk)
    beat = IdleManager.objects.order_by("-heartbeat_at").values_list("heartbeat_at", flat=True).first()
    eventually(lambda: IdleManager.objects.filter(heartbeat_at__gt=beat).exists(), 10, "another manager heartbeat")
    assert len(provider.token_requests) == asked and not idling(account)

    # Reconnect: the same account signs in with a new grant; the message that arrived meanwhile is
    # fetched once, the one stored before is not fetched again.
    refresh, access = provider.grant(oauth_user)
    same = grants.connect_account(owner=alice, provider=generic, email=oauth_user, account=account,
                                  token={"refresh_token": refresh, "access_token": access, "expires_in": 3600})
    assert same.pk == account.pk
    eventually(lambda: stored(account, 900), 20, "the message from the signed-out window stored")
    eventually(lambda: idling(account), 20, "idling again")
    after = push_and_wait(oauth_dovecot, oauth_user, account)
    assert [stored(account, n) for n in (kept, 900, after)] == [1, 1, 1]
    assert Message.objects.filter(account=account).count() == 3


def test_two_processes_needing_a_refresh_at_once_spend_the_refresh_token_once(
        alice, provider, oauth_dovecot, generic, oauth_user):
    account = signed_in(alice, provider, generic, oauth_user, expires_in=0)  # expired: both must refresh
    env = oauth_env(provider, oauth_dovecot)
    names = [f"oauth-test-account-{next(_logs)}" for _ in range(2)]
    provider.hold_refreshes()
    started = []
    try:
        started.append(procs.start(["manage.py", "test_account", str(account.pk)], names[0], **env))
        assert provider.refresh_arrived.wait(20)  # the first holds the claim, its request held
        started.append(procs.start(["manage.py", "test_account", str(account.pk)], names[1], **env))
        eventually(lambda: "waiting for the token refresh another process is doing" in procs.log_text(names[1]),
                   20, "the second process waiting for the first one's refresh")
    finally:
        provider.release_refreshes()
        codes = [proc.wait(30) for proc in started]
    assert codes == [0, 0], [procs.log_text(name)[-2000:] for name in names]
    assert provider.refresh_requests[oauth_user] == 1
    assert not provider.grants[oauth_user].revoked  # a second use of the rotated token would revoke it
    assert logins(oauth_dovecot, oauth_user, "XOAUTH2") == 2
