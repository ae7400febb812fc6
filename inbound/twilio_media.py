"""MMS pictures and files, downloaded while Twilio's webhook call is answered.

Twilio waits 15 s for the answer, so all downloads of one call share MAILGATE_WEBHOOK_MEDIA_SECONDS
(default 10); a part that does not fit keeps its link and says so.

Twilio lists them as MediaUrl0..N with MediaContentType0..N. A GET of the URL (with HTTP Basic
auth as AccountSid + auth token, which Twilio requires when media authentication is on) answers
with a redirect to its storage; outgoing.http.get_file follows it without the credentials. A
failed download never loses the SMS: its text keeps the link and says why it was not attached.
"""

from __future__ import annotations

import mimetypes

from outgoing import http
from outgoing.errors import TransportError

# Twilio accepts MMS up to 5 MB in all; anything far bigger is not an MMS part.
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 10  # Twilio's own limit per message
TIMEOUT = 15.0


def fetch_all(fields: dict, auth_token: str) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """(attachments as (filename, content type, bytes), lines for the text) of one webhook call."""
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
            error = http.validate_url(url, "MediaUrl")
            if error:
                raise TransportError(error, permanent=True)
            data = http.get_file(url, headers, max_bytes=MAX_FILE_BYTES, timeout=budget.timeout(TIMEOUT))
        except TransportError as exc:
            lines.append(f"- {content_type}: {url} (not downloaded: {exc.message})")
            continue
        attachments.append((name, content_type, data))
        lines.append(f"- {content_type}: attached as {name}")
    return attachments, lines
