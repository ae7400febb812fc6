"""Login throttling (django-axes): the pieces mailgate configures, named in settings.py.

A user name and client address pair is locked for MAILGATE_LOGIN_COOLOFF_MINUTES after
MAILGATE_LOGIN_FAILURE_LIMIT failed logins, on /accounts/login/ and /admin/login/ alike (both go
through django.contrib.auth.authenticate, which the backend below guards). Another address, or
another user from the same address, is not locked: a guesser cannot lock a user out everywhere.
"""

from __future__ import annotations

import ipaddress

from axes.backends import AxesStandaloneBackend
from django.conf import settings


def client_ip(request) -> str | None:
    """The address that throttling counts failures against.

    Behind the proxy (MAILGATE_BEHIND_PROXY) that is the last X-Forwarded-For entry, the one our
    proxy appended: entries before it come from the client and can be anything. Without a proxy
    the header is the client's own invention, so only the socket's address counts."""
    remote = request.META.get("REMOTE_ADDR")
    if not settings.MAILGATE_BEHIND_PROXY:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return remote


class ThrottleBackend(AxesStandaloneBackend):
    """Refuses a locked-out user and address before any password is checked (ModelBackend, next
    in AUTHENTICATION_BACKENDS, does the checking). authenticate() without a request comes from
    code on this host (manage.py shell, a command), not from a client, so it is not throttled:
    axes would raise instead."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
