"""Attachment links that outgoing transports send (outgoing.formatting.attachment_url): public,
signed and expiring, at /hooks/files/<token>/, for subscribers who have no login here."""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpResponseNotAllowed

from outgoing import formatting
from pipeline.models import Attachment


def attachment(request, token: str):
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    pk = formatting.attachment_link_target(token)
    item = Attachment.objects.filter(pk=pk).first() if pk else None
    if item is None or not item.file:
        raise Http404("no such attachment")
    return FileResponse(item.file.open("rb"), as_attachment=True, filename=item.filename,
                        content_type=item.content_type or "application/octet-stream")
