"""Open an authenticated imap-tools mailbox for an account, with every failure classified.

Used by `test_account`, batch sync and UI write-back. A timeout applies to every socket
operation (imap-tools has none by default) and LOGOUT is always sent.
"""

import imaplib
import re
import socket
import ssl
from contextlib import contextmanager

from django.conf import settings
from imap_tools import MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import MailboxLoginError

from imap import errors
from imap.models import is_loopback
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


@contextmanager
def open_mailbox(account, *, timeout: float | None = None, initial_folder: str | None = None):
    """Yield a logged-in imap-tools mailbox; raise an errors.ImapError subclass on failure.

    `initial_folder=None` logs in without selecting a folder.
    """
    timeout = timeout or settings.MAILGATE_IMAP_TIMEOUT
    if account.security == type(account).Security.NONE and not is_loopback(account.host):
        # Account.clean() refuses this; a row written around it must still never leak a password.
        raise errors.TlsFailure(f"refusing to log in without TLS to {account.host}: not a loopback host")
    try:
        password = account.get_password()
    except CredentialsUnreadable:
        raise errors.CredentialsNeedReentry(
            "the stored password cannot be decrypted with the configured keys; enter it again") from None
    try:
        mailbox = _mailbox(account, timeout)
        if password.isascii() and account.username.isascii():
            mailbox.login(account.username, password, initial_folder=initial_folder)
        else:
            # LOGIN arguments are ASCII in imaplib; AUTHENTICATE PLAIN carries UTF-8.
            mailbox.login_utf8(account.username, password, initial_folder=initial_folder)
    except Exception as exc:
        raise classify(exc, account) from None
    try:
        yield mailbox
    finally:
        try:
            mailbox.logout()
        except Exception:  # the connection may already be gone; LOGOUT is best effort
            pass
