"""OAuth2 sign-in (imap/oauth/) against a real Dovecot whose oauth2 passdb asks a local provider.

The provider (tests/servers/oauth_provider.py) issues, rotates, introspects and revokes tokens and
counts the refresh requests it gets, so the tests see what a real provider would.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from frontend import actions
from imap import accounts, errors
from imap.idle.client import IdleClient, push_kinds
from imap.models import Account, MessageLocation, OAuthGrant
from imap.oauth import grants, providers, sasl, tokens
from imap.sync import sync_account_now
from mailgate import rotation
from tests.servers.dovecot import Dovecot
from tests.servers.oauth_fixtures import logins, oauth_mail as mail, signed_in


# check_connection runs its probe in a thread: it must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_sync_write_back_and_test_connection_sign_in_with_xoauth2(alice, provider, oauth_dovecot, generic,
                                                                     oauth_user):
    uids = [oauth_dovecot.append(oauth_user, "INBOX", mail(n)) for n in range(2)]
    account = signed_in(alice, provider, generic, oauth_user)
    assert account.auth_method == Account.AuthMethod.OAUTH2 and account.username == oauth_user

    assert sync_account_now(account, ignore_backoff=True).errors == []
    locations = MessageLocation.objects.filter(account=account)
    assert sorted(loc.uid for loc in locations) == uids
    result = actions.apply(alice, [str(locations[0].message_id)], "read")
    assert result.as_dict()["errors"] == []
    assert "\\Seen" in oauth_dovecot.flags(oauth_user)[locations[0].uid]
    report = accounts.check_connection(account)
    assert report.ok, report.message

    assert logins(oauth_dovecot, oauth_user, "XOAUTH2") == 3
    assert provider.refresh_requests[oauth_user] == 0  # the token was fresh: nothing spent
    account.refresh_from_db()
    assert account.state == Account.State.OK


# check_connection runs its probe in a thread: it must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_server_that_offers_only_oauthbearer_gets_oauthbearer(alice, settings, provider, generic, oauth_user):
    server = Dovecot.start(oauth2_introspection_url=provider.url("/introspect"), oauth2_mechanisms=("oauthbearer",))
    try:
        server.add_user(oauth_user, "unused")
        settings.MAILGATE_OAUTH_GENERIC_IMAP_PORT = server.port
        account = signed_in(alice, provider, providers.get("generic"), oauth_user)
        report = accounts.check_connection(account)
        assert report.ok, report.message
        assert logins(server, oauth_user, "OAUTHBEARER") == 1
    finally:
        server.stop()


# check_connection runs its probe in a thread: it must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_token_about_to_expire_is_refreshed_before_login_and_the_new_refresh_token_kept(
        alice, provider, oauth_dovecot, generic, oauth_user):
    account = signed_in(alice, provider, generic, oauth_user)
    first_refresh = provider.grants[oauth_user].refresh_token
    now = timezone.now()
    OAuthGrant.objects.filter(pk=account.pk).update(access_issued_at=now - timedelta(hours=1),
                                                    access_expires_at=now + timedelta(seconds=30))
    assert accounts.check_connection(account).ok
    assert provider.refresh_requests[oauth_user] == 1
    grant = OAuthGrant.objects.get(pk=account.pk)
    assert grant.token_version == 2 and grant.access_expires_at > now + timedelta(minutes=50)
    # The provider rotated the refresh token; the next refresh must present the new one.
    assert provider.grants[oauth_user].refresh_token != first_refresh
    assert tokens.access_token(account.pk, stale_version=2).version == 3
    assert not provider.grants[oauth_user].revoked  # no reuse of a rotated refresh token
    assert first_refresh not in grant.tokens_encrypted  # encrypted at rest


@pytest.mark.django_db
def test_a_token_the_server_refuses_is_refreshed_once_and_the_login_retried(
        alice, provider, oauth_dovecot, generic, oauth_user):
    oauth_dovecot.append(oauth_user, "INBOX", mail(10))
    account = signed_in(alice, provider, generic, oauth_user)
    provider.expire_access_tokens()  # mailgate still thinks its token has an hour left
    assert sync_account_now(account, ignore_backoff=True).errors == []
    assert provider.refresh_requests[oauth_user] == 1
    assert MessageLocation.objects.filter(account=account).count() == 1


# check_connection runs its probe in a thread: it must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_revoked_grant_stops_the_account_without_a_retry_storm_and_reconnect_brings_it_back(
        alice, provider, oauth_dovecot, generic, oauth_user):
    oauth_dovecot.append(oauth_user, "INBOX", mail(20))
    account = signed_in(alice, provider, generic, oauth_user)
    assert sync_account_now(account, ignore_backoff=True).errors == []
    provider.revoke(oauth_user)

    report = sync_account_now(account, ignore_backoff=True)
    assert report.errors
    account.refresh_from_db()
    assert account.state == Account.State.SIGN_IN_EXPIRED
    assert account.get_state_display() == "Sign-in expired: reconnect"
    assert "invalid_grant" in account.last_error and "reconnect" in account.last_error
    for _ in range(3):  # later syncs, IDLE reconnects and tests ask the provider nothing more
        assert sync_account_now(account, ignore_backoff=True).errors
        with pytest.raises(errors.SignInExpired):
            tokens.access_token(account.pk)
    check = accounts.check_connection(account)
    assert not check.ok and check.error.reason == "sign-in expired"
    assert provider.refresh_requests[oauth_user] == 1

    # Reconnect: a new grant for the same account keeps its messages and adds only the new one.
    oauth_dovecot.append(oauth_user, "INBOX", mail(21))
    refresh, access = provider.grant(oauth_user)
    same = grants.connect_account(owner=alice, provider=generic, email=oauth_user, account=account,
                                  token={"refresh_token": refresh, "access_token": access, "expires_in": 3600})
    assert same.pk == account.pk and same.state == Account.State.NEW
    assert sync_account_now(same, ignore_backoff=True).errors == []
    assert MessageLocation.objects.filter(account=account).count() == 2


class _Seen(logging.Handler):
    def __init__(self, text: str):
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record):
        if self.text in record.getMessage():
            self.event.set()


@pytest.mark.django_db(transaction=True)
def test_two_processes_needing_a_refresh_at_once_use_one_refresh_request(alice, provider, generic, oauth_user):
    account = signed_in(alice, provider, generic, oauth_user)
    OAuthGrant.objects.filter(pk=account.pk).update(access_expires_at=timezone.now())
    seen = _Seen("waiting for the token refresh another process is doing")
    logging.getLogger("imap.oauth.tokens").addHandler(seen)
    results, failures = {}, []

    def need_token(name):
        try:
            results[name] = tokens.access_token(account.pk)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    provider.hold_refreshes()
    first = threading.Thread(target=need_token, args=("first",))
    second = threading.Thread(target=need_token, args=("second",))
    try:
        first.start()
        assert provider.refresh_arrived.wait(10)  # the first holds the claim, its request in flight
        second.start()
        assert seen.event.wait(10)  # the second found the claim taken and waits for the result
    finally:
        provider.release_refreshes()
        first.join(20)
        second.join(20)
        logging.getLogger("imap.oauth.tokens").removeHandler(seen)
    assert failures == []
    assert provider.refresh_requests[oauth_user] == 1
    assert results["first"].value == results["second"].value and results["first"].version == 2
    assert not provider.grants[oauth_user].revoked


def test_the_idle_client_signs_in_with_xoauth2_refreshing_a_refused_token_once(provider, oauth_dovecot,
                                                                               oauth_user):
    _, good = provider.grant(oauth_user)
    asked = []

    async def get_token(stale_version):
        asked.append(stale_version)
        return tokens.AccessToken("revoked-or-expired" if stale_version is None else good, len(asked))

    async def scenario():
        client = IdleClient(oauth_dovecot.host, oauth_dovecot.port, tls="none", ssl_context=None, timeout=5)
        await client.open(oauth_user, None, "INBOX", oauth_token=get_token)
        await client.start_idle()
        await asyncio.to_thread(oauth_dovecot.append, oauth_user, "INBOX", mail(30))
        lines = await client.wait_push(5)
        await client.close(5)
        return lines

    assert push_kinds(asyncio.run(scenario()))[0] is True
    assert asked == [None, 1]
    assert logins(oauth_dovecot, oauth_user, "XOAUTH2") == 1


def test_the_idle_client_reports_a_refused_token_as_an_authentication_failure(provider, oauth_dovecot,
                                                                              oauth_user):
    async def bad_token(stale_version):
        return tokens.AccessToken("not-a-token", 1)

    async def scenario():
        client = IdleClient(oauth_dovecot.host, oauth_dovecot.port, tls="none", ssl_context=None, timeout=5)
        try:
            await client.open(oauth_user, None, "INBOX", oauth_token=bad_token)
        finally:
            client.abort()

    with pytest.raises(errors.AuthenticationFailed):
        asyncio.run(scenario())


# check_connection runs its probe in a thread: it must see committed rows.
@pytest.mark.django_db(transaction=True)
def test_test_connection_names_an_unreachable_provider_and_keeps_retrying(alice, settings, provider, generic,
                                                                          oauth_user):
    account = signed_in(alice, provider, generic, oauth_user)
    OAuthGrant.objects.filter(pk=account.pk).update(access_expires_at=timezone.now())
    settings.MAILGATE_OAUTH_GENERIC_TOKEN_URL = "http://127.0.0.1:9/token"  # discard port: refused
    report = accounts.check_connection(account)
    assert not report.ok and report.error.reason == "provider unreachable"
    account.refresh_from_db()
    assert account.state == Account.State.ERROR and account.backoff_until is not None


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_oauth_grants(alice, settings, provider, generic, oauth_user):
    account = signed_in(alice, provider, generic, oauth_user)
    before = OAuthGrant.objects.get(pk=account.pk).tokens_encrypted
    settings.MAILGATE_FERNET_KEYS = [Fernet.generate_key().decode(), *settings.MAILGATE_FERNET_KEYS]
    result = rotation.rotate_all()
    assert result.rotated["OAuth grants"] == 1
    grant = OAuthGrant.objects.get(pk=account.pk)
    assert grant.tokens_encrypted != before
    assert tokens.access_token(account.pk).value  # still readable with the new key


def _approve(provider, authorize_url: str) -> str:
    """What a person does on the provider's consent page: follow "Approve"; returns the callback URL."""
    with urllib.request.urlopen(authorize_url, timeout=5) as page:
        link = re.search(r'id="approve" href="([^"]+)"', page.read().decode()).group(1)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(provider.url(html.unescape(link)), timeout=5)
    except urllib.error.HTTPError as answer:
        assert answer.code == 302
        return answer.headers["Location"]
    raise AssertionError("the consent page did not redirect")


@pytest.mark.django_db
def test_connect_with_a_provider_creates_the_account_with_the_reported_address_and_starts_its_sync(
        client, admin_user, settings, provider, oauth_dovecot, generic, oauth_user,
        django_capture_on_commit_callbacks):
    settings.MAILGATE_PUBLIC_BASE_URL = "http://testserver"
    settings.SECURE_SSL_REDIRECT = False  # on in the PostgreSQL pass (not loopback-only); not under test here
    client.force_login(admin_user)
    page = client.get("/admin/imap/account/add/")
    assert b"Connect with another provider" in page.content
    started = client.get("/imap/oauth/generic/start/")
    assert started.status_code == 302
    query = parse_qs(urlsplit(started["Location"]).query)
    assert query["redirect_uri"] == ["http://testserver/imap/oauth/callback/"]
    assert query["code_challenge_method"] == ["S256"] and query["state"]

    provider.sign_in_as = oauth_user
    callback = _approve(provider, started["Location"])
    # A valid code with another state (a link forged for this browser) is refused before any exchange.
    forged = client.get(re.sub(r"state=[^&]+", "state=forged", callback.replace("http://testserver", "")))
    assert forged.status_code == 302 and forged["Location"] == "/admin/imap/account/add/"
    assert not Account.objects.exists()
    started = client.get("/imap/oauth/generic/start/")
    callback = _approve(provider, started["Location"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = client.get(callback.replace("http://testserver", ""))
    account = Account.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/admin/imap/account/{account.pk}/change/"
    assert (account.email, account.username, account.auth_method) == (oauth_user, oauth_user, "oauth2")
    assert account.owner == admin_user and account.port == oauth_dovecot.port
    assert len(callbacks) == 1  # the first sync, queued after commit
    change = client.get(done["Location"])
    assert b"Reconnect" in change.content and b'name="password"' not in change.content


@pytest.mark.django_db
def test_add_account_with_oauth_takes_a_refresh_token_from_a_file(tmp_path, alice, provider, oauth_dovecot,
                                                                   generic, oauth_user):
    refresh, _ = provider.grant(oauth_user)
    token_file = tmp_path / "refresh-token"
    token_file.write_text(refresh + "\n")
    out = StringIO()
    call_command("add_account", "--owner", "alice", "--email", oauth_user, "--oauth", "generic",
                 "--refresh-token-file", str(token_file), stdout=out)
    account = Account.objects.get(pk=int(out.getvalue()))
    assert refresh not in OAuthGrant.objects.get(pk=account.pk).tokens_encrypted
    assert sync_account_now(account, ignore_backoff=True).errors == []  # refreshed first: no access token yet
    assert provider.refresh_requests[oauth_user] == 1


@pytest.mark.django_db
def test_reconnect_in_the_browser_flow_signs_the_same_account_in_again(
        client, admin_user, settings, provider, oauth_dovecot, generic, oauth_user):
    settings.MAILGATE_PUBLIC_BASE_URL = "http://testserver"
    settings.SECURE_SSL_REDIRECT = False  # on in the PostgreSQL pass (not loopback-only); not under test here
    account = signed_in(admin_user, provider, generic, oauth_user)
    provider.revoke(oauth_user)
    OAuthGrant.objects.filter(pk=account.pk).update(access_expires_at=timezone.now())
    with pytest.raises(errors.SignInExpired):
        tokens.access_token(account.pk)
    client.force_login(admin_user)
    provider.sign_in_as = oauth_user
    started = client.get(f"/imap/oauth/generic/start/?account={account.pk}")
    assert parse_qs(urlsplit(started["Location"]).query)["login_hint"] == [oauth_user]
    done = client.get(_approve(provider, started["Location"]).replace("http://testserver", ""))
    assert done["Location"] == f"/admin/imap/account/{account.pk}/change/"
    assert Account.objects.count() == 1
    account.refresh_from_db()
    assert account.state == Account.State.NEW
    assert sync_account_now(account, ignore_backoff=True).errors == []


@pytest.mark.parametrize("challenge, server_text, reason, words", [
    (b'{"status":"401","schemes":"bearer"}', "AUTHENTICATIONFAILED", "authentication failed", "refused the access"),
    (b'{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}', "NO", "sign-in expired",
     "wrong scope"),
    (b"", "NO User is authenticated but not connected. IMAP is disabled", "sign-in expired", "IMAP is disabled"),
])
def test_a_refused_oauth_login_names_its_cause(challenge, server_text, reason, words):
    error = sasl.refusal("XOAUTH2", challenge, server_text, "me@example.test", "imap.example.test:993")
    assert error.reason == reason and words in error.message
