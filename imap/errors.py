"""What can go wrong talking to an IMAP server, as exceptions whose message is safe to show.

Messages never contain the password; they name the host and the cause in one line.
"""


class ImapError(Exception):
    """Base: `str(exc)` is one clear line for the owner. `retry` says whether backing off helps."""

    reason = "error"
    retry = True

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NameNotResolved(ImapError):
    reason = "name not resolved"


class ConnectionRefused(ImapError):
    reason = "connection refused"


class TlsFailure(ImapError):
    reason = "TLS failure"


class AuthenticationFailed(ImapError):
    reason = "authentication failed"
    retry = False  # retrying a wrong password only gets the account locked by the provider


class CredentialsNeedReentry(ImapError):
    reason = "credentials need re-entry"
    retry = False


class SignInExpired(ImapError):
    """OAuth2: the provider refused the refresh token (invalid_grant: consent revoked, grant
    expired, password changed). Only signing in again helps."""

    reason = "sign-in expired"
    retry = False


class ProviderUnreachable(ImapError):
    """OAuth2: the provider's token endpoint did not answer usably (network, 5xx, garbage)."""

    reason = "provider unreachable"


class Timeout(ImapError):
    reason = "timeout"


class Throttled(ImapError):
    """The provider asked us to slow down (NO [THROTTLED], too many connections, ...)."""

    reason = "throttled"

    def __init__(self, message: str, backoff_seconds: float | None = None):
        super().__init__(message)
        self.backoff_seconds = backoff_seconds


class StorageFailed(ImapError):
    """Our own files dir refused the mail (full, read-only): not the server's fault, and the sync
    can go on once space is back, so it backs off like any transient error."""

    reason = "cannot store mail"


class ProtocolError(ImapError):
    reason = "protocol error"


class TooManyConnections(ImapError):
    """Every one of the account's connection slots is in use (see imap/slots.py)."""

    reason = "no free connection slot"
