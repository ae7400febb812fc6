"""The one exception a send (or a download through outgoing.http) fails with."""


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
