"""The account admin: a write-only password and a "Test connection" button that answers in the page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from imap.accounts import create_account
from imap.models import Account
from tests.builders import account_row, lease_and_connect
from tests.servers.browser import login, screenshot_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_account(alice, dovecot, mail_user, settings):
    settings.MAILGATE_IMAP_CAFILE = dovecot.cafile
    return create_account(owner=alice, email=f"{mail_user.name}@example.test", host=dovecot.host,
                          port=dovecot.tls_port, username=mail_user.name, password=mail_user.password,
                          display_name="Alice at work")


@pytest.fixture
def admin_client_(client, admin_user):
    client.force_login(admin_user)
    return client


def change_url(account):
    return reverse("admin:imap_account_change", args=[account.pk])


def form_data(account, **overrides):
    data = {
        "display_name": account.display_name, "email": account.email, "owner": account.owner_id,
        "host": account.host, "port": account.port, "security": account.security,
        "username": account.username, "password": "", "folders_include": "[]", "folders_exclude": "[]",
        "push_folders": "[]", "enabled": "on",
    }
    data.update(overrides)
    return data


def test_the_change_page_never_shows_the_password_or_its_ciphertext(admin_client_, alice_account, mail_user):
    page = admin_client_.get(change_url(alice_account)).content.decode()
    assert 'name="password"' in page and "Test connection" in page
    assert mail_user.password not in page
    assert alice_account.password_encrypted not in page
    assert not re.search(r'name="password"[^>]*value=', page)


def test_saving_with_a_blank_password_keeps_the_stored_one(admin_client_, alice_account, mail_user):
    response = admin_client_.post(change_url(alice_account), form_data(alice_account, display_name="Renamed"))
    assert response.status_code == 302, response.content.decode()[:2000]
    alice_account.refresh_from_db()
    assert alice_account.display_name == "Renamed"
    assert alice_account.get_password() == mail_user.password
    assert alice_account.config_version == 1  # nothing the IDLE manager cares about changed


def test_a_new_password_is_encrypted_and_clears_an_auth_failure(admin_client_, alice_account):
    Account.objects.filter(pk=alice_account.pk).update(state=Account.State.AUTH_FAILED, auth_failures=3)
    response = admin_client_.post(change_url(alice_account), form_data(alice_account, password="fixed-pw"))
    assert response.status_code == 302
    alice_account.refresh_from_db()
    assert alice_account.get_password() == "fixed-pw"
    assert "fixed-pw" not in alice_account.password_encrypted
    assert (alice_account.state, alice_account.auth_failures, alice_account.config_version) == (
        Account.State.NEW, 0, 2)


def test_adding_an_account_requires_a_password(admin_client_, alice):
    data = form_data(Account(owner=alice, display_name="New", email="new@example.test", host="imap.example.test",
                             port=993, security="ssl", username="new"))
    response = admin_client_.post(reverse("admin:imap_account_add"), data)
    assert response.status_code == 200
    assert "A password is required for a new account." in response.content.decode()
    response = admin_client_.post(reverse("admin:imap_account_add"), {**data, "password": "pw"})
    assert response.status_code == 302
    assert Account.objects.get(email="new@example.test").get_password() == "pw"


def test_the_test_connection_endpoint_answers_json_and_records_the_state(admin_client_, alice_account):
    url = reverse("admin:imap_account_test_connection", args=[alice_account.pk])
    assert admin_client_.get(url).status_code == 405  # a test changes state: POST only
    body = admin_client_.post(url).json()
    assert body["ok"] is True and body["message"] == "connected: 1 folder" and body["folders"] == ["INBOX"]
    assert body["state"] == Account.State.OK


def test_bob_cannot_test_or_see_alices_account(client, bob, alice_account):
    bob.is_staff = True
    bob.save()
    from django.contrib.auth.models import Permission

    bob.user_permissions.add(*Permission.objects.filter(codename__in=["view_account", "change_account"]))
    client.force_login(bob)
    assert client.post(reverse("admin:imap_account_test_connection", args=[alice_account.pk])).status_code == 404
    listing = client.get(reverse("admin:imap_account_changelist")).content.decode()
    assert "Alice at work" not in listing


def test_the_change_page_shows_the_idle_state_read_only(admin_client_, alice):
    account = account_row(alice, name="Pushy")
    owner = lease_and_connect(account)
    page = admin_client_.get(change_url(account)).content.decode()
    idle = page[page.index('class="fieldset-heading">IDLE</h2>'):]
    for label in ["IDLE", "Idling since", "Last push", "Last IDLE error", "Reconnects",
                  "Lease owner (IDLE manager)", "Lease expires"]:
        assert f"{label}:</label>" in idle, label
    assert owner in idle
    assert "2026" in idle[idle.index("Last push:"):idle.index("Last IDLE error:")]  # BASE_DATE, formatted
    assert re.search(r"Reconnects:</label>\s*<div class=\"readonly\">1</div>", idle)
    assert 'name="idle_' not in page  # read-only: nothing to post back


def test_the_account_list_shows_idle_and_last_push_columns_without_a_query_per_row(admin_client_, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    lease_and_connect(account_row(alice, name="Pushy"))
    with CaptureQueriesContext(connection) as one:
        page = admin_client_.get(reverse("admin:imap_account_changelist")).content.decode()
    assert "column-idle_connected" in page and "column-idle_last_push" in page
    assert 'alt="True"' in page  # connected under a live lease
    for _ in range(3):
        lease_and_connect(account_row(alice), owner="host-b:1:cafe")
    with CaptureQueriesContext(connection) as four:
        admin_client_.get(reverse("admin:imap_account_changelist"))
    assert len(four) == len(one)


def test_an_account_without_an_idle_session_has_a_quiet_idle_fieldset(admin_client_, alice):
    account = account_row(alice)
    page = admin_client_.get(change_url(account)).content.decode()
    assert "none (no IDLE manager holds this account)" in page
    assert 'class="fieldset-heading">IDLE</h2>' in page
    add_page = admin_client_.get(reverse("admin:imap_account_add")).content.decode()
    assert 'class="fieldset-heading">Folders</h2>' in add_page
    assert 'class="fieldset-heading">IDLE</h2>' not in add_page


def test_bob_cannot_see_alices_idle_session_in_the_admin(client, bob, alice):
    from django.contrib.auth.models import Permission

    lease_and_connect(account_row(alice, name="Alice's pushy"))
    bob.is_staff = True
    bob.save()
    bob.user_permissions.add(*Permission.objects.filter(codename="view_idlesession"))
    client.force_login(bob)
    listing = client.get(reverse("admin:imap_idlesession_changelist"))
    assert listing.status_code == 200
    assert "Alice&#x27;s pushy" not in listing.content.decode()
    assert "0 idle sessions" in listing.content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_test_connection_button_shows_success_then_failure_after_the_password_changes(
        page, live_web, admin_user, alice_account, dovecot, request):
    # Plain IMAP to loopback: the shared web server has no CA file for Dovecot's certificate.
    Account.objects.filter(pk=alice_account.pk).update(security=Account.Security.NONE, port=dovecot.port)
    login(page, live_web.url, "admin", "admin-password")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
    result = page.locator(f"#test-connection-result-{alice_account.pk}")

    # The list of accounts has the button on each row.
    page.goto(f"{live_web.url}/admin/imap/account/")
    navigations.clear()
    page.click(f"button.mailgate-test-connection[data-account='{alice_account.pk}']")
    page.wait_for_selector(f"#test-connection-result-{alice_account.pk}[data-state=ok]")
    assert result.inner_text() == "✔ connected: 1 folder" and navigations == []

    page.goto(f"{live_web.url}/admin/imap/account/{alice_account.pk}/change/")
    navigations.clear()

    page.click("button.mailgate-test-connection")
    page.wait_for_selector(f"#test-connection-result-{alice_account.pk}[data-state=ok]")
    assert result.inner_text() == "✔ connected: 1 folder"
    assert navigations == []  # shown without a reload
    page.screenshot(path=str(screenshot_path(request, "-success")), full_page=True)

    # The owner types a wrong password into the write-only field and saves.
    page.fill("#id_password", "typo-in-password")
    page.click("input[name=_continue]")
    page.wait_for_selector("ul.messagelist")
    assert page.input_value("#id_password") == ""  # never rendered back
    navigations.clear()
    page.click("button.mailgate-test-connection")
    page.wait_for_selector(f"#test-connection-result-{alice_account.pk}[data-state=error]")
    assert result.inner_text() == (f"✘ authentication failed for {alice_account.username} "
                                   f"at 127.0.0.1:{dovecot.port}")
    assert navigations == []
    page.screenshot(path=str(screenshot_path(request, "-failure")), full_page=True)
    alice_account.refresh_from_db()
    assert alice_account.last_error.startswith("authentication failed")


def test_the_account_list_and_page_word_each_state_as_the_app_does(admin_client_, alice):
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from imap.models import IdleSession

    def row(name, **fields):
        account = account_row(alice, name=name)
        Account.objects.filter(pk=account.pk).update(**fields)
        return account

    expired = row("Expired", state=Account.State.SIGN_IN_EXPIRED, last_error="invalid_grant")
    row("Off", state=Account.State.OK, enabled=False)
    pushing = row("Pushing", state=Account.State.OK)
    reconnecting = row("Reconnecting", state=Account.State.OK)
    lease = {"lease_owner": "host:1:abc", "lease_expires_at": timezone.now() + timedelta(minutes=1)}
    IdleSession.objects.create(account=pushing, connected=True, **lease)
    IdleSession.objects.create(account=reconnecting, connected=False, last_error="connection refused", **lease)
    row("Backing off", state=Account.State.ERROR, last_error="connection refused",
        backoff_until=timezone.now() + timedelta(minutes=5))

    listing = admin_client_.get(reverse("admin:imap_account_changelist")).content.decode()
    cells = dict(re.findall(r'<th class="field-display_name"><a [^>]*>([^<]+) \d+</a></th>.*?'
                            r'<td class="field-status"><span title="[^"]*">([^<]+)</span>', listing, re.S))
    assert cells["Expired"] == "Stopped: Sign-in expired: reconnect"
    assert cells["Off"] == "Turned off"
    assert cells["Pushing"] == "Connected, receiving new mail instantly"
    assert cells["Reconnecting"] == "Reconnecting"  # not "Connected" beside a push connection that is down
    assert cells["Backing off"].startswith("Cannot connect; trying again (next try ")
    assert "sign_in_expired" not in listing.split("<tbody>")[1].split("</tbody>")[0]

    # The very words of the app's pipeline page and API, for the owner.
    owner = Client()
    owner.force_login(alice)
    api = {a["display_name"].rsplit(" ", 1)[0]: a["health"]["label"]
           for a in owner.get(reverse("frontend:api_accounts")).json()["results"]}
    assert all(cells[name].startswith(api[name]) for name in cells), (cells, api)

    page = admin_client_.get(change_url(reconnecting)).content.decode()
    assert re.search(r"State:</label>\s*<div class=\"readonly\"><span title=\"connection refused\">Reconnecting</span>",
                     page)
    expired_page = admin_client_.get(change_url(expired)).content.decode()
    assert 'title="invalid_grant">Stopped: Sign-in expired: reconnect<' in expired_page
