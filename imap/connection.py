"""Connections to an account's server, with every failure classified (imap/errors.py).

Two layers:
  * open_mailbox: an authenticated imap-tools mailbox, and no more. A timeout applies to every
    socket operation (imap-tools has none by default) and LOGOUT is always sent. It takes no
    connection slot: its callers do (connect below, and `check_connection` in imap/accounts.py).
  * connect: what batch sync and UI write-back (imap/writeback.py) hold - one of the account's
    connection slots (imap/slots.py), the backoff check before and the account's status after
    (imap/account_state.py), the capabilities as the server states them after login, CONDSTORE
    enabled when offered.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import ImapToolsError, MailboxLoginError

from imap import account_state, errors, slots
from imap.models import Account, is_loopback
from imap.oauth import sasl, tokens
from mailgate.crypto import CredentialsUnreadable

THROTTLE_PATTERNS = re.compile(
    r"\[THROTTLED\]|too many simultaneous connections|suggested backoff time|"
    r"\[UNAVAILABLE\]|\[LIMIT\]|rate limit",
    re.IGNORECASE,
)
BACKOFF_SECONDS = re.compile(r"suggested backoff time:?\s*(\d+)\s*(ms|milliseconds?|s|seconds?)?", re.I)


def throttle_from_text(text: str) -> errors.Throttled | None:
    """A Throttled error if the server's words say it is throttling us."""
    if not THROTTLE_PATTERNS.search(text or ""):
        return None
    seconds = None
    match = BACKOFF_SECONDS.search(text)
    if match:
        value = float(match.group(1))
        seconds = value / 1000 if (match.group(2) or "").lower().startswith("m") else value
    return errors.Throttled(f"server is throttling: {text.strip()[:200]}", backoff_seconds=seconds)


def ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    # Verification stays on; tests point MAILGATE_IMAP_CAFILE at their self-signed CA.
    return ssl.create_default_context(cafile=cafile or settings.MAILGATE_IMAP_CAFILE or None)


def _mailbox(account, timeout: float):
    Security = type(account).Security
    if account.security == Security.SSL:
        return MailBox(account.host, account.port, timeout=timeout, ssl_context=ssl_context())
    if account.security == Security.STARTTLS:
        return MailBoxStartTls(account.host, account.port, timeout=timeout, ssl_context=ssl_context())
    return MailBoxUnencrypted(account.host, account.port, timeout=timeout)


def classify(exc: BaseException, account) -> errors.ImapError:
    """Turn a low-level exception into one clear ImapError (never mentioning the password)."""
    where = f"{account.host}:{account.port}"
    if isinstance(exc, errors.ImapError):
        return exc
    if isinstance(exc, socket.gaierror):
        return errors.NameNotResolved(f"name not resolved: {account.host}")
    if isinstance(exc, ConnectionRefusedError):
        return errors.ConnectionRefused(f"connection refused by {where}")
    if isinstance(exc, ssl.SSLError):
        return errors.TlsFailure(f"TLS failure with {where}: {getattr(exc, 'reason', None) or exc}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return errors.Timeout(f"timeout talking to {where}")
    if isinstance(exc, MailboxLoginError):
        text = str(exc)
        return throttle_from_text(text) or errors.AuthenticationFailed(
            f"authentication failed for {account.username} at {where}")
    if isinstance(exc, (imaplib.IMAP4.abort, ConnectionError, EOFError)):
        # A TLS client talking to a plain port sees the connection dropped or garbage.
        return errors.ProtocolError(f"connection to {where} was closed unexpectedly ({type(exc).__name__})")
    if isinstance(exc, imaplib.IMAP4.error):
        return throttle_from_text(str(exc)) or errors.ProtocolError(f"{where} answered: {str(exc)[:200]}")
    if isinstance(exc, OSError):
        return errors.ProtocolError(f"network error with {where}: {exc.strerror or exc}")
    return errors.ProtocolError(f"unexpected error with {where}: {type(exc).__name__}")


def _login_utf8(mailbox, username: str, password: str, initial_folder) -> None:
    """AUTHENTICATE PLAIN for a non-ASCII username or password. imaplib raises its generic error for
    a refused AUTHENTICATE (where LOGIN gives imap-tools' MailboxLoginError), which would read as a
    protocol error and be retried for ever: a refusal here is a failed login like any other."""
    try:
        mailbox.login_utf8(username, password, initial_folder=None)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        raise MailboxLoginError(("NO", [str(exc).encode()]), "OK") from None
    if initial_folder is not None:
        mailbox.folder.set(initial_folder)


def _authenticate_oauth(mailbox, account, token: tokens.AccessToken) -> None:
    """AUTHENTICATE XOAUTH2 (or OAUTHBEARER) with `token`; raises errors.ImapError on refusal."""
    client = mailbox.client
    mech = sasl.mechanism(client.capabilities)
    where = f"{account.host}:{account.port}"
    challenges = []

    def respond(challenge: bytes) -> bytes:
        if challenge:  # the error challenge: end the exchange so the server sends its NO
            challenges.append(challenge)
            return sasl.abort_response(mech)
        return sasl.initial_response(mech, account.username, token.value, account.host, account.port)

    if mech is None:
        raise sasl.refusal(None, b"", "", account.username, where)
    try:
        typ, data = client.authenticate(mech, respond)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        text = str(exc)
        raise throttle_from_text(text) or sasl.refusal(mech, challenges[-1] if challenges else b"", text,
                                                       account.username, where) from None
    mailbox.login_result = (typ, data)


def _login_oauth(mailbox, account, token: tokens.AccessToken, initial_folder) -> None:
    """Sign in with the account's access token; if the server refuses it, refresh it once (unless
    another process already did) and try again on the same connection."""
    try:
        _authenticate_oauth(mailbox, account, token)
    except errors.AuthenticationFailed:
        _authenticate_oauth(mailbox, account, tokens.access_token(account.pk, stale_version=token.version))
    if initial_folder is not None:
        mailbox.folder.set(initial_folder)


@contextmanager
def open_mailbox(account, *, timeout: float | None = None, initial_folder: str | None = None):
    """Yield a logged-in imap-tools mailbox; raise an errors.ImapError subclass on failure.

    `initial_folder=None` logs in without selecting a folder.
    """
    timeout = timeout or settings.MAILGATE_IMAP_TIMEOUT
    if account.security == type(account).Security.NONE and not is_loopback(account.host):
        # Account.clean() refuses this; a row written around it must still never leak a password.
        raise errors.TlsFailure(f"refusing to log in without TLS to {account.host}: not a loopback host")
    oauth = account.auth_method == type(account).AuthMethod.OAUTH2
    try:
        password = "" if oauth else account.get_password()
    except CredentialsUnreadable:
        raise errors.CredentialsNeedReentry(
            "the stored password cannot be decrypted with the configured keys; enter it again") from None
    # OAuth2: the token first (refreshed if needed), so a dead grant costs no connection.
    token = tokens.access_token(account.pk) if oauth else None
    try:
        mailbox = _mailbox(account, timeout)
        if oauth:
            _login_oauth(mailbox, account, token, initial_folder)
        elif password.isascii() and account.username.isascii():
            mailbox.login(account.username, password, initial_folder=initial_folder)
        else:
            # LOGIN arguments are ASCII in imaplib; AUTHENTICATE PLAIN carries UTF-8.
            _login_utf8(mailbox, account.username, password, initial_folder)
    except Exception as exc:  # noqa: BLE001 - the boundary: whatever happens, one ImapError, no password
        raise classify(exc, account) from None
    try:
        yield mailbox
    finally:
        try:
            mailbox.logout()
        except (ImapToolsError, imaplib.IMAP4.error, OSError, EOFError):
            pass  # the connection may already be gone; LOGOUT is best effort


class AccountBlocked(errors.ImapError):
    """We must not connect now: account disabled, stopped after auth failures, or backing off."""

    reason = "not connecting"
    retry = False


@dataclass
class Connection:
    """A logged-in imaplib client of `account` and what its server can do."""

    account: Account
    client: imaplib.IMAP4
    capabilities: frozenset
    slot: slots.Slot
    mailbox: object = None  # the imap-tools MailBox around `client`, for callers that use its helpers

    @property
    def condstore(self) -> bool:
        return "CONDSTORE" in self.capabilities or "QRESYNC" in self.capabilities

    @property
    def gmail(self) -> bool:
        return "X-GM-EXT-1" in self.capabilities


def capabilities(client) -> frozenset:
    """The server's capabilities as it states them now (upper-cased), also left on the client."""
    # The pre-login greeting often lists fewer capabilities (Dovecot adds CONDSTORE after login,
    # many servers MOVE and UIDPLUS).
    typ, data = client.capability()
    if typ != "OK" or not data:
        return frozenset(c.upper() for c in client.capabilities)
    caps = set()
    for line in data:
        if isinstance(line, bytes):
            caps.update(line.decode("ascii", "replace").upper().split())
    client.capabilities = tuple(sorted(caps))
    return frozenset(caps)


@contextmanager
def connect(account: Account, purpose: str = "sync", *, ignore_backoff: bool = False, wait: float = 0.0):
    """A logged-in Connection holding one of the account's connection slots.

    Waits up to `wait` seconds for a free slot, then raises errors.TooManyConnections (not recorded
    on the account: the server said nothing). Failures are classified (imap/errors.py), recorded on
    the account (backoff, AUTH_FAILED...) and re-raised; a session that ends normally records success.
    """
    reason = account_state.blocked_reason(account)
    if reason and not (ignore_backoff and account.enabled and account.state not in account_state.STOPPED_STATES):
        raise AccountBlocked(f"account {account.pk}: {reason}")
    with slots.connection_slot(account, purpose, wait=wait) as slot:
        try:
            with open_mailbox(account, timeout=settings.MAILGATE_IMAP_TIMEOUT) as mailbox:
                client = mailbox.client
                conn = Connection(account, client, capabilities(client), slot, mailbox)
                if conn.condstore and "ENABLE" in conn.capabilities:
                    client._simple_command("ENABLE", "CONDSTORE")
                yield conn
        except (errors.TooManyConnections, AccountBlocked):
            raise
        except (errors.ImapError, imaplib.IMAP4.error, OSError, EOFError) as exc:
            classified = classify(exc, account)
            account_state.record_failure(account, classified)
            if classified is exc:
                raise
            raise classified from exc
    account_state.record_success(account)


def check(typ, data, what: str):
    """The data of an OK reply; otherwise Throttled if the server says so, else ProtocolError."""
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace") if data else ""
        raise throttle_from_text(text) or errors.ProtocolError(f"{what} failed: {text[:200]}")
    return data
