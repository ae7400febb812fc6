"""MMS pictures and files, downloaded while Twilio's webhook call is answered.

Twilio waits 15 s for the answer, so all downloads of one call share MAILGATE_WEBHOOK_MEDIA_SECONDS
(default 10); a part that does not fit keeps its link and says so.

Twilio lists them as MediaUrl0..N with MediaContentType0..N. A GET of the URL (with HTTP Basic
auth as AccountSid + auth token, which Twilio requires when media authentication is on) answers
with a redirect to its storage; outgoing.http.get_file follows that one without the credentials.
A failed download never loses the SMS: its text keeps the link and says why it was not attached.

The URLs come from the call, so only Twilio's own media hosts (MAILGATE_TWILIO_MEDIA_HOSTS) are
fetched, and the credentials sent are those of the token that signed the call: whoever signs with
a previous (perhaps leaked) token cannot point mailgate, and the current token, at their server.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import urlsplit

from django.conf import settings

from outgoing import http
from outgoing.errors import TransportError

# Twilio accepts MMS up to 5 MB in all; anything far bigger is not an MMS part.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 10  # Twilio's own limit per message
TIMEOUT = 15.0


def media_url_problem(url: str) -> str | None:
    """Why `url` is not fetched (checked before any connection, without DNS), or None."""
    error = http.url_problem(url, "MediaUrl")
    if error:
        return error
    hosts = {host.lower() for host in settings.MAILGATE_TWILIO_MEDIA_HOSTS}
    if (urlsplit(url).hostname or "").lower() not in hosts:
        return "not a Twilio media URL"
    return None


def fetch_all(fields: dict, auth_token: str) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(attachments as (filename, content type, bytes), lines for the text) of one webhook call.
    `auth_token`: the token that signed the call."""
    count = fields.get("NumMedia") or "0"
    count = min(int(count), MAX_FILES) if count.isdigit() else 0
    headers = {"Accept": "*/*"}
    if fields.get("AccountSid") and auth_token:
        headers["Authorization"] = http.basic_auth(fields["AccountSid"], auth_token)
    attachments, lines = [], []
    budget = http.webhook_media_budget()
    for index in range(count):
        url = fields.get(f"MediaUrl{index}")
        if not url:
            continue
        content_type = fields.get(f"MediaContentType{index}") or "application/octet-stream"
        name = f"media-{index + 1}{mimetypes.guess_extension(content_type) or ''}"
        try:
            error = media_url_problem(url)
            if error:
                raise TransportError(error, permanent=True)
            data = http.get_file(url, headers, max_bytes=MAX_FILE_BYTES, timeout=budget.timeout(TIMEOUT),
                                 follow_redirect=True)
        except TransportError as exc:
            lines.append(f"- {content_type}: {url} (not downloaded: {exc.message})")
            continue
        attachments.append((name, content_type, data))
        lines.append(f"- {content_type}: attached as {name}")
    return attachments, lines
