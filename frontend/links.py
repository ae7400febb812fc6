"""Attachment links that outgoing transports send (outgoing.formatting.attachment_url): public,
signed and expiring, at /hooks/files/<token>/, for subscribers who have no login here."""

from __future__ import annotations

from django.http import Http404, HttpResponseNotAllowed

from frontend import downloads
from outgoing import formatting
from pipeline.models import Attachment


def attachment(request, token: str):
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    pk = formatting.attachment_link_target(token)
    item = Attachment.objects.filter(pk=pk).first() if pk else None
    if item is None or not item.file:
        raise Http404("no such attachment")
    # The type and name come from the message's sender: the same locked-down download as the
    # logged-in one, so no client renders attacker HTML on mailgate's origin.
    return downloads.attachment_response(item)
