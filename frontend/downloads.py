"""How bytes that came from a message leave mailgate: the logged-in download (frontend/views.py)
and the public attachment link (frontend/links.py) answer with the same locked-down headers."""

from __future__ import annotations

import re

from django.http import FileResponse, Http404

from mailgate import storage

# Types a browser shows without running anything; everything else is sent as opaque bytes.
SAFE_DOWNLOAD_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}


def locked_down(response):
    """Headers for bytes that came from a message: never sniffed into something executable and,
    opened directly anyway (e.g. a PDF viewer tab), unable to run anything or reach anywhere."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


def base_type(content_type: str | None) -> str:
    """A message-supplied Content-Type without its parameters, lower-case ("" for none)."""
    return (content_type or "").split(";")[0].strip().lower()


def safe_download_type(content_type: str | None) -> str:
    """The message-supplied type when it is on the safe list, else application/octet-stream."""
    base = base_type(content_type)
    return base if base in SAFE_DOWNLOAD_TYPES else "application/octet-stream"


def stored_response(name: str, **kwargs) -> FileResponse:
    """A stored object streamed in chunks as it is sent (mailgate.storage.open_stream: never the
    whole attachment in memory, from a local file or from the bucket), with the locked-down
    headers; 404 when the object is gone."""
    try:
        stream = storage.open_stream(name)
    except FileNotFoundError:
        raise Http404("no such file") from None
    response = FileResponse(stream, **kwargs)
    # A bucket's stream has no file name or seek for FileResponse to measure; the store knows.
    response["Content-Length"] = str(stream.size)
    return locked_down(response)


def inline_response(name: str, content_type: str) -> FileResponse:
    """A stored object shown in the page (Content-Disposition: inline); the caller has checked that
    `content_type` is one a browser only displays."""
    response = stored_response(name, content_type=content_type)
    response["Content-Disposition"] = "inline"
    return response


def attachment_response(item) -> FileResponse:
    """An Attachment row as a download (Content-Disposition: attachment), never rendered inline."""
    return stored_response(item.file.name, as_attachment=True, filename=item.filename or "attachment",
                           content_type=safe_download_type(item.content_type))


def eml_filename(subject: str | None) -> str:
    """A download name for a message's original: its subject, tamed, with .eml."""
    stem = re.sub(r"[^\w\- .]+", "_", subject or "", flags=re.UNICODE).strip(" ._")[:80]
    return f"{stem or 'message'}.eml"
