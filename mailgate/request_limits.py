"""A bound on request bodies, enforced by daphne before anything is buffered.

Twisted (under daphne) writes a whole request body to a temporary file before daphne hands it to
Django, and Django's ASGI handler spools it once more, with no limit on either copy: a chunked POST
of many gigabytes to any URL, anonymous, filled the disk twice before a view such as the webhook's
could look at its size. This request class counts body bytes as they arrive and answers 413 as
soon as the declared length or the bytes received pass MAILGATE_MAX_REQUEST_BYTES (never less than
MAILGATE_WEBHOOK_MAX_BYTES, so a webhook call over its own limit still gets the webhook's 413), then
closes the connection: nothing more is read, and the application never sees the request.

daphne has no option for this; mailgate/asgi.py puts the class in place (install()) when the web
process loads the application, which `daphne ...asgi:application` and `manage.py runserver` both do.
"""

from __future__ import annotations

import logging

from daphne import http_protocol
from django.conf import settings

log = logging.getLogger(__name__)


def max_request_bytes() -> int:
    return max(settings.MAILGATE_MAX_REQUEST_BYTES, settings.MAILGATE_WEBHOOK_MAX_BYTES)


class BoundedWebRequest(http_protocol.WebRequest):
    refused = False
    received = 0

    def gotLength(self, length):
        if length is not None and length > max_request_bytes():
            self._refuse(f"Content-Length {length}")
            length = 0  # no temporary file for a body that will not be read
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        if self.received > max_request_bytes():
            self._refuse(f"more than {max_request_bytes()} bytes received")
            return
        super().handleContentChunk(data)

    def process(self):
        if not self.refused:  # a refused body may still end in the data already read
            return super().process()
        return None

    def _refuse(self, why: str) -> None:
        self.refused = True
        address = self.getClientAddress()
        log.warning("refused a request body from %s: %s (limit %s bytes)", getattr(address, "host", "?"),
                    why, max_request_bytes())
        # Written on the transport like twisted's own 400 for malformed chunks: the request has
        # not been handed to daphne's reply machinery and never will be.
        body = b"Request body too large.\n"
        self.channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        self.channel.loseConnection()


def install() -> None:
    """Make daphne build BoundedWebRequest for every HTTP request (its factory looks the class up
    in daphne.http_protocol at each connection)."""
    http_protocol.WebRequest = BoundedWebRequest
