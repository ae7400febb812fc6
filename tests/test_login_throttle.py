"""Login throttling (django-axes, mailgate/login_throttle.py): a user name and client address pair
is locked after MAILGATE_LOGIN_FAILURE_LIMIT (5) failures, on the login page and the admin's, and
only that pair; the lock lifts after the cool-off. Time is moved by ageing the stored failures, the
way the clock would, instead of sleeping."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import F
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = settings.LOGIN_URL
ADMIN_LOGIN = "/admin/login/"
ATTACKER, NEIGHBOUR = "203.0.113.7", "198.51.100.20"


def try_login(address: str, username: str, password: str, url: str = LOGIN, **headers) -> tuple[int, bool]:
    """(status, logged in?) for one POST of the form from `address`, in a fresh browser."""
    client = Client(REMOTE_ADDR=address)
    response = client.post(url, {"username": username, "password": password}, **headers)
    return response.status_code, "_auth_user_id" in client.session


def fail_times(n: int, address: str, username: str, url: str = LOGIN, **headers) -> list[int]:
    return [try_login(address, username, f"guess-{i}", url, **headers)[0] for i in range(n)]


def let_the_cool_off_pass() -> None:
    """Every stored failure becomes as old as the cool-off plus a second."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))


def test_the_sixth_try_for_a_user_from_one_address_is_refused_even_with_the_right_password(alice, bob):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert fail_times(5, ATTACKER, "alice") == [200, 200, 200, 200, 429]  # the 5th failure locks
    assert try_login(ATTACKER, "alice", "alice-password") == (429, False)
    page = Client(REMOTE_ADDR=ATTACKER).post(LOGIN, {"username": "alice", "password": "alice-password"})
    assert b'id="locked-out"' in page.content and b"Too many failed logins" in page.content

    assert try_login(NEIGHBOUR, "alice", "alice-password") == (302, True)  # another address
    assert try_login(ATTACKER, "bob", "bob-password") == (302, True)  # another user
    assert "alice-password" not in "".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert not [a for a in AccessAttempt.objects.values_list("post_data", flat=True) if "guess-" in a]

    let_the_cool_off_pass()
    assert try_login(ATTACKER, "alice", "alice-password") == (302, True)


def test_a_success_before_the_limit_starts_the_count_again(alice):
    assert fail_times(4, ATTACKER, "alice") == [200] * 4
    assert try_login(ATTACKER, "alice", "alice-password") == (302, True)
    assert fail_times(4, ATTACKER, "alice") == [200] * 4
    assert try_login(ATTACKER, "alice", "alice-password") == (302, True)


def test_the_admin_login_is_throttled_the_same_way(admin_user):
    assert fail_times(5, ATTACKER, "admin", ADMIN_LOGIN) == [200, 200, 200, 200, 429]
    assert try_login(ATTACKER, "admin", "admin-password", ADMIN_LOGIN) == (429, False)
    assert try_login(ATTACKER, "admin", "admin-password", LOGIN) == (429, False)  # one count for both pages
    assert try_login(NEIGHBOUR, "admin", "admin-password", ADMIN_LOGIN) == (302, True)


def test_without_a_proxy_a_forwarded_header_does_not_change_the_address_counted(alice, settings):
    settings.MAILGATE_BEHIND_PROXY = False
    statuses = [try_login(ATTACKER, "alice", "nope", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")[0] for i in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert try_login(ATTACKER, "alice", "alice-password", HTTP_X_FORWARDED_FOR="192.0.2.99") == (429, False)


def test_behind_the_proxy_the_address_it_appended_is_counted(alice, settings):
    settings.MAILGATE_BEHIND_PROXY = True
    proxy = "10.0.0.2"
    # The client may send any X-Forwarded-For; the proxy appends the real address last.
    statuses = [try_login(proxy, "alice", "nope", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, {ATTACKER}")[0]
                for i in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert try_login(proxy, "alice", "alice-password", HTTP_X_FORWARDED_FOR=ATTACKER) == (429, False)
    assert try_login(proxy, "alice", "alice-password", HTTP_X_FORWARDED_FOR=NEIGHBOUR) == (302, True)


def test_authenticate_without_a_request_is_not_throttled(alice):
    from django.contrib.auth import authenticate

    fail_times(5, ATTACKER, "alice")
    assert authenticate(username="alice", password="alice-password") == alice  # manage.py shell, commands


# Through daphne: the production (ASGI, async middleware) path, CSRF included --------------------

class Browser:
    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies),
                                                  _NoRedirect())

    def request(self, path: str, data: dict | None = None) -> tuple[int, bytes]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body, headers={"Referer": self.base_url + path})
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_in(self, username: str, password: str) -> int:
        _, page = self.request(LOGIN)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        return self.request(LOGIN, {"csrfmiddlewaretoken": token, "username": username, "password": password})[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_the_sixth_try_and_lets_the_user_in_after_the_cool_off(live_web, alice):
    browser = Browser(live_web.url)
    assert [browser.log_in("alice", f"guess-{i}") for i in range(5)] == [200, 200, 200, 200, 429]
    assert browser.log_in("alice", "alice-password") == 429
    let_the_cool_off_pass()
    assert browser.log_in("alice", "alice-password") == 302
