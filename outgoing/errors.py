"""The one exception a send (or a download through outgoing.http) fails with."""

import re


class TransportError(Exception):
    """A send failed. `permanent` errors fail the delivery at once; others retry with backoff.

    `retry_after` (seconds) carries the service's own Retry-After when it gave one.
    The message is shown to the owner on the delivery: the service's own error text, no secrets.
    """

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

# What a library's own message may carry that an owner (or an account member) must not read: a
# URL with a token in its path or query, a quoted path, a long token-like run of characters.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_QUOTED = re.compile(r"(?<!\w)[bB]?(?:'[^']*'|\"[^\"]*\")")  # not the apostrophe of "can't"
_PATH = re.compile(r"(?<![\w.])/\S+")
_TOKENISH = re.compile(r"[A-Za-z0-9_:+/=-]{16,}")


def redacted(text: str, limit: int = 200) -> str:
    """`text` with URLs, quoted strings, paths and token-like runs replaced by "…": what is left
    says what went wrong without repeating what it went wrong with."""
    for pattern in (_QUOTED, _URL, _PATH, _TOKENISH):
        text = pattern.sub("…", text)
    return " ".join(text.split())[:limit]


def unexpected(exc: BaseException) -> TransportError:
    """The TransportError recorded for an exception no transport expected (a bug, a library's
    surprise): transient, named by its type, with a redacted message, never its repr()."""
    detail = redacted(str(exc))
    return TransportError(f"unexpected error: {type(exc).__name__}" + (f": {detail}" if detail else ""))
