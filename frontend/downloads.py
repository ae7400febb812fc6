"""How bytes that came from a message leave mailgate: the logged-in download (frontend/views.py)
and the public attachment link (frontend/links.py) answer with the same locked-down headers."""

from __future__ import annotations

import re

from django.http import FileResponse

# Types a browser shows without running anything; everything else is sent as opaque bytes.
SAFE_DOWNLOAD_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}


def locked_down(response):
    """Headers for bytes that came from a message: never sniffed into something executable and,
    opened directly anyway (e.g. a PDF viewer tab), unable to run anything or reach anywhere."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


def safe_download_type(content_type: str | None) -> str:
    """The message-supplied type when it is on the safe list, else application/octet-stream."""
    base = (content_type or "").split(";")[0].strip().lower()
    return base if base in SAFE_DOWNLOAD_TYPES else "application/octet-stream"


def attachment_response(item) -> FileResponse:
    """An Attachment row as a download (Content-Disposition: attachment), never rendered inline."""
    return locked_down(FileResponse(item.file.open("rb"), as_attachment=True,
                                    filename=item.filename or "attachment",
                                    content_type=safe_download_type(item.content_type)))


def eml_filename(subject: str | None) -> str:
    """A download name for a message's original: its subject, tamed, with .eml."""
    stem = re.sub(r"[^\w\- .]+", "_", subject or "", flags=re.UNICODE).strip(" ._")[:80]
    return f"{stem or 'message'}.eml"
