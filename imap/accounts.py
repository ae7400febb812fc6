"""Account credentials and the connection test behind `manage.py test_account` and the admin button.

Plain functions, called by thin entry points (management commands, admin views) and tested
directly. Nothing here logs or returns a password: error texts come from imap.errors, whose
messages name the host and the cause only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, transaction

from imap import account_state, errors, queue, slots
from imap.connection import open_mailbox
from imap.models import Account

log = logging.getLogger(__name__)

# Changing any of these means the IDLE manager must reconnect and a past auth failure no longer
# applies (the owner fixed something), so they bump config_version and reset the state.
CONNECTION_FIELDS = frozenset({"host", "port", "security", "username", "password"})
SKIPPED_FOLDER_FLAGS = {"\\noselect", "\\nonexistent"}
JOIN_GRACE = 0.3  # seconds


@dataclass
class ConnectionReport:
    """What a connection test found: the selectable folders, or one error safe to show."""

    ok: bool
    folders: list[str] = field(default_factory=list)
    error: errors.ImapError | None = None
    seconds: float = 0.0

    @property
    def message(self) -> str:
        if self.ok:
            return f"connected: {len(self.folders)} folder{'s' if len(self.folders) != 1 else ''}"
        if self.error is None:
            return "failed"
        text = self.error.message
        # Most messages already start with their cause ("connection refused by ..."); name it otherwise.
        return text if self.error.reason.lower() in text.lower() else f"{self.error.reason}: {text}"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "message": self.message,
            "folders": self.folders,
            "reason": None if self.ok or self.error is None else self.error.reason,
            "seconds": round(self.seconds, 3),
        }


def selectable_folders(folder_infos) -> list[str]:
    """Names of folders that can be selected, INBOX first, then in server order."""
    names = [f.name for f in folder_infos if not SKIPPED_FOLDER_FLAGS & {fl.lower() for fl in f.flags}]
    return sorted(names, key=lambda name: name.upper() != "INBOX")


def _probe(account: Account, timeout: float) -> list[str]:
    with open_mailbox(account, timeout=timeout) as mailbox:
        return selectable_folders(mailbox.folder.list())


def _claim_slot(account: Account, timeout: float) -> slots.Slot | None:
    """The connection slot a test holds; raises errors.ImapError if it must not log in now."""
    if account.pk is None:
        return None  # not saved: nothing else connects to it, and slot rows need the account row
    if account.state in account_state.STOPPED_STATES:
        # Another try with the password the server refused MAILGATE_AUTH_FAILURE_LIMIT times gets
        # the account locked by the provider; a new password clears the state (connection_changed).
        stopped = {Account.State.AUTH_FAILED: errors.AuthenticationFailed,
                   Account.State.SIGN_IN_EXPIRED: errors.SignInExpired}.get(account.state,
                                                                           errors.CredentialsNeedReentry)
        raise stopped(account.last_error or Account.State(account.state).label)
    return slots.claim_slot(account, "test connection", wait=min(settings.MAILGATE_SLOT_WAIT, timeout / 2))


class _Handover:
    """Who releases the slot: the caller if the probe ended in time, else the probe's thread when
    its connection finally closes (the slot counts for as long as the connection is open)."""

    def __init__(self, slot: slots.Slot | None):
        self.slot = slot
        self.lock = threading.Lock()
        self.finished = self.abandoned = False

    def probe_finished(self) -> None:
        with self.lock:
            self.finished = True
            release = self.abandoned
        if release:
            try:
                self.slot.release()
            except Exception:  # noqa: BLE001 - a thread's boundary: the slot expires by itself
                log.warning("could not release connection slot of account %s", self.slot.account_id, exc_info=True)
            finally:
                connections.close_all()  # this thread's own database connection

    def caller_done(self) -> None:
        with self.lock:
            self.abandoned = not self.finished
            release = self.finished
        if release:
            self.slot.release()  # here, in the caller's transaction, where the claim was made


def check_connection(account: Account, *, timeout: float | None = None, record: bool = True) -> ConnectionReport:
    """Log in, list folders and log out, within `timeout` seconds in total.

    Holds one of the account's connection slots like every other connection (waiting for one for
    at most half the timeout); refused without a login for an account stopped after failed logins.
    Neither refusal is recorded: the server said nothing. The socket timeout bounds each
    operation, but a slow DNS lookup or a server that trickles bytes could add several of them
    up; the probe therefore runs in a daemon thread and the caller stops waiting at the deadline
    (if it is left running, that thread releases the slot when its connection closes).
    With `record` the result is written to the account's status (state, last error) so the owner
    sees it in admin and the UI.
    """
    timeout = float(timeout or settings.MAILGATE_IMAP_TIMEOUT)
    outcome: dict = {}
    started = time.monotonic()
    try:
        slot = _claim_slot(account, timeout)
    except errors.ImapError as exc:
        return ConnectionReport(False, error=exc, seconds=time.monotonic() - started)
    handover = _Handover(slot)
    if slot is not None:
        slot.keep_alive()
    remaining = max(0.1, timeout - (time.monotonic() - started))

    def run():
        try:
            outcome["folders"] = _probe(account, remaining)
        except errors.ImapError as exc:
            outcome["error"] = exc
        except Exception as exc:  # noqa: BLE001 - the thread's boundary: shown as its type only
            # open_mailbox already turned every login and network failure into an ImapError, so
            # this is a bug or an answer imap-tools could not parse: keep the traceback for us.
            log.exception("account %s: unexpected error testing the connection to %s:%s", account.pk,
                          account.host, account.port)
            outcome["error"] = errors.ProtocolError(f"unexpected error with {account.host}:{account.port}: "
                                                    f"{type(exc).__name__}")
        finally:
            if slot is not None:
                handover.probe_finished()

    worker = threading.Thread(target=run, name=f"check-account-{account.pk}", daemon=True)
    worker.start()
    # A little past the socket timeout: a server that says nothing times out in the thread, which
    # then ends (and logs out) here rather than being left behind with its connection.
    worker.join(remaining + JOIN_GRACE)
    if slot is not None:
        handover.caller_done()
    seconds = time.monotonic() - started
    if "folders" in outcome:
        report = ConnectionReport(True, folders=outcome["folders"], seconds=seconds)
    elif "error" in outcome:
        report = ConnectionReport(False, error=outcome["error"], seconds=seconds)
    else:
        report = ConnectionReport(False, error=errors.Timeout(
            f"timeout talking to {account.host}:{account.port} (no answer within {timeout:g} s)"), seconds=seconds)
    if record and account.pk:
        record_result(account, report)
    return report


def record_result(account: Account, report: ConnectionReport) -> None:
    """Write a connection outcome to the account's status fields, as sync and IDLE do."""
    if report.ok:
        account_state.record_success(account)
    else:
        account_state.record_failure(account, report.error)


def connection_changed(account: Account, changed: set[str]) -> None:
    """Call before saving an account whose connection fields changed (see CONNECTION_FIELDS).

    The IDLE manager reconnects when config_version moves; a new password or server clears any
    state such as "authentication failed" (back to "not connected yet") so sync tries again.
    """
    if not CONNECTION_FIELDS & set(changed):
        return
    account.config_version = (account.config_version or 0) + 1
    account.auth_failures = 0
    account.backoff_until = None
    account.backoff_step = 0
    # Whatever was known about the old server or password says nothing about the new one.
    account.state = Account.State.NEW


def connected_copy(owner, host: str, username: str, exclude: Account | None = None) -> Account | None:
    """The owner's enabled account on this mailbox (the same server and login, either case),
    other than `exclude`. A second one would sync and relay every message again, so adding or
    enabling it is refused (constraint imap_account_one_enabled_per_mailbox)."""
    rows = Account.objects.filter(owner=owner, enabled=True, host__iexact=host.strip(), username__iexact=username)
    if exclude is not None and exclude.pk:
        rows = rows.exclude(pk=exclude.pk)
    return rows.first()


def already_connected(account: Account) -> str:
    """The error a user reads when they connect `account`'s mailbox again."""
    return f"This mailbox is already connected as “{account.display_name}”."


@transaction.atomic
def create_account(*, owner, email: str, host: str, password: str, port: int | None = None,
                   security: str = Account.Security.SSL, username: str = "", display_name: str = "",
                   **extra) -> Account:
    """Validate and store a new account with its password encrypted. Raises ValidationError."""
    if port is None:
        port = 993 if security == Account.Security.SSL else 143
    account = Account(owner=owner, email=email, host=host, port=port, security=security,
                      username=username or email, display_name=display_name or email, **extra)
    if not password:
        raise ValidationError({"password": "A password is required."})
    if account.enabled and (copy := connected_copy(owner, host, account.username)):
        raise ValidationError(already_connected(copy))
    account.set_password(password)
    account.full_clean()
    account.save()
    first_sync(account)
    return account


def needs_test_before_enabling(account: Account, changed, *, adding: bool) -> bool:
    """Whether saving `account` must first pass a connection test: it is (or becomes) enabled
    and it is new, is being enabled, or its server or password changed. An account never goes
    live on a login nobody has seen work: three quick failures would stop it (and may get the
    mailbox locked by the provider, B6 of issue #17). OAuth2 accounts are tested by their sign-in."""
    if not account.enabled or account.auth_method != Account.AuthMethod.PASSWORD:
        return False
    return adding or bool({"enabled", *CONNECTION_FIELDS} & set(changed))


def first_sync(account: Account) -> None:
    """Start the new account's first sync of every folder once it is committed (the IDLE manager
    only watches the push folders, and the periodic sync may be minutes away). What the folders
    hold then is history: kept, never relayed."""
    if account.enabled:
        transaction.on_commit(lambda: queue.enqueue_account_sync(account.pk))


def set_account_password(account: Account, password: str) -> None:
    """Store a new password (encrypted) and tell the IDLE manager to reconnect."""
    account.set_password(password)
    connection_changed(account, {"password"})
    account.save()
