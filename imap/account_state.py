"""An account's connection status: what the owner sees (state, last error) and when we may retry.

Shared by batch sync (imap/tasks.py) and the IDLE manager. Every write is an UPDATE of the status
fields only, so it never overwrites settings edited meanwhile; each change of state is pushed to
the owner's pages as an "account.status" event after the transaction commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from imap import errors
from imap.models import Account
from mailgate import backoff, realtime

log = logging.getLogger(__name__)

# States in which nobody connects until the owner changes something (imap.accounts.connection_changed
# resets them when the password or server changes).
STOPPED_STATES = (Account.State.AUTH_FAILED, Account.State.NEEDS_CREDENTIALS, Account.State.SIGN_IN_EXPIRED)


def health(account, idle: dict | None) -> dict:
    """One honest state for an account, from its sync state and its IDLE connection together:
    a connected account whose push connection is down says so, with the error. The pipeline page,
    the API (`health`) and the account admin all say this, so they never disagree.

    `idle` is {"connected", "leased", "last_error"} of the account's IDLE session (connected and
    leased only while its lease is live), or None before an IDLE manager took the account on.

    Returns {"key", "label", "detail"}; key is one of ok, push_down, error, stopped, new.
    """
    error = (idle or {}).get("last_error") or account.last_error or ""
    if account.state in STOPPED_STATES:
        return {"key": "stopped", "label": f"Stopped: {account.get_state_display()}", "detail": account.last_error}
    if not account.enabled:
        return {"key": "stopped", "label": "Turned off", "detail": ""}
    if account.state in (Account.State.ERROR, Account.State.THROTTLED):
        label = "Throttled by the provider" if account.state == Account.State.THROTTLED else "Cannot connect"
        if account.backoff_until and account.backoff_until > timezone.now():
            return {"key": "error", "label": f"{label}; trying again", "detail": account.last_error,
                    "retry_at": account.backoff_until.isoformat()}
        return {"key": "error", "label": f"{label}; trying again", "detail": account.last_error}
    if account.state == Account.State.NEW and not (idle and idle["connected"]):
        return {"key": "new", "label": "Not connected yet", "detail": error}
    if idle and idle["connected"]:
        return {"key": "ok", "label": "Connected, receiving new mail instantly", "detail": ""}
    if idle and idle["leased"]:
        return {"key": "push_down", "label": "Reconnecting", "detail": error}
    return {"key": "ok", "label": "Connected, checking for mail every few minutes", "detail": error}


def blocked_reason(account: Account, now=None) -> str | None:
    """Why we must not connect to `account` now (one line for logs and the UI), or None if we may."""
    now = now or timezone.now()
    if not account.enabled:
        return "account is disabled"
    if account.state in STOPPED_STATES:
        return account.last_error or Account.State(account.state).label
    if account.backoff_until and account.backoff_until > now:
        return f"backing off until {account.backoff_until:%Y-%m-%d %H:%M:%S %Z}"
    return None


def backoff_seconds(step: int) -> float:
    """Delay before retry number `step` (0-based): base * 2**step capped, with "equal jitter" so a
    fleet of accounts that failed together (provider outage) does not come back in lockstep."""
    return backoff.equal_jitter(step, base=settings.MAILGATE_BACKOFF_BASE, cap=settings.MAILGATE_BACKOFF_MAX)


def _publish(account: Account) -> None:
    data = {
        "account_id": account.pk,
        "state": account.state,
        "state_label": Account.State(account.state).label,
        "last_error": account.last_error,
        "backoff_until": account.backoff_until.isoformat() if account.backoff_until else None,
    }
    realtime.publish_for_account(account, "account.status", data)


def record_success(account: Account) -> None:
    """A connection worked: state OK, error, auth-failure count and backoff cleared.

    Costs one UPDATE that matches nothing when the account was already fine (so calling it after
    every sync or IDLE reconnect is cheap); publishes "account.status" only when something changed.
    """
    values = {"state": Account.State.OK, "last_error": "", "auth_failures": 0,
              "backoff_until": None, "backoff_step": 0}
    already_fine = Q(state=Account.State.OK, last_error="", auth_failures=0, backoff_until__isnull=True,
                     backoff_step=0)
    changed = Account.objects.filter(pk=account.pk).exclude(already_fine).update(**values,
                                                                                 updated_at=timezone.now())
    for name, value in values.items():
        setattr(account, name, value)
    if changed:
        _publish(account)


def record_failure(account: Account, exc: BaseException) -> float | None:
    """Record a failed connection or command and decide when to try again.

    Returns the backoff in seconds (Account.backoff_until is set to now + that), or None when
    retrying cannot help until the owner acts: the password failed
    MAILGATE_AUTH_FAILURE_LIMIT times in a row (state AUTH_FAILED), the stored password cannot be
    decrypted (NEEDS_CREDENTIALS), or the OAuth2 provider refused the grant (SIGN_IN_EXPIRED).
    Throttling (errors.Throttled) sets state THROTTLED and waits at least as long as the provider
    suggested; anything else is state ERROR with exponential backoff.
    `exc` should be an errors.ImapError (see imap.connection.classify); other exceptions are recorded
    by type only, since their text may contain anything.
    """
    now = timezone.now()
    if isinstance(exc, errors.ImapError):
        text = exc.message if exc.reason.lower() in exc.message.lower() else f"{exc.reason}: {exc.message}"
    else:
        text = f"unexpected error: {type(exc).__name__}"
    with transaction.atomic():
        row = Account.objects.select_for_update().only("auth_failures", "backoff_step").get(pk=account.pk)
        values = {"last_error": text[:2000], "last_error_at": now}
        backoff = None
        if isinstance(exc, errors.CredentialsNeedReentry):
            values.update(state=Account.State.NEEDS_CREDENTIALS, backoff_until=None)
        elif isinstance(exc, errors.SignInExpired):
            values.update(state=Account.State.SIGN_IN_EXPIRED, backoff_until=None)
        elif isinstance(exc, errors.AuthenticationFailed):
            failures = row.auth_failures + 1
            values["auth_failures"] = failures
            if failures >= settings.MAILGATE_AUTH_FAILURE_LIMIT:
                values.update(state=Account.State.AUTH_FAILED, backoff_until=None,
                              last_error=f"{text} (stopped after {failures} failed logins; "
                                         f"enter the correct password)"[:2000])
            else:
                backoff = backoff_seconds(row.backoff_step)
                values.update(state=Account.State.ERROR, backoff_step=row.backoff_step + 1)
        else:
            backoff = backoff_seconds(row.backoff_step)
            if isinstance(exc, errors.Throttled):
                backoff = max(backoff, exc.backoff_seconds or 0)
                values["state"] = Account.State.THROTTLED
            else:
                values["state"] = Account.State.ERROR
            values["backoff_step"] = row.backoff_step + 1
        if backoff is not None:
            values["backoff_until"] = now + timedelta(seconds=backoff)
        Account.objects.filter(pk=account.pk).update(**values, updated_at=now)
        for name, value in values.items():
            setattr(account, name, value)
        _publish(account)
    log.info("account %s: %s (%s)", account.pk, text,
             f"retry in {backoff:.0f} s" if backoff is not None else "stopped")
    return backoff
