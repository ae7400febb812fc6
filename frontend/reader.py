"""The reader (message page) beyond the body frame: the way back to the list and the neighbours in
it, the conversation, the original source and .eml download, image previews and attached messages.

Every lookup goes through frontend.access, like the other views; bytes that came from a message
leave with frontend.downloads' locked-down headers.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from frontend import access, downloads, listing, serializers, wording
from mailgate import storage
from pipeline.parsing.message import parse_message

# Pages a reader may come from and go back to: the list in any of its filtered forms.
LIST_PATHS = ("/", "/inbox/")
# The Original view shows at most this much of the source (a 40 MB message would stall the tab);
# the .eml download is always whole.
RAW_SHOWN_BYTES = 2 * 1024 * 1024
# Previews: raster images only. SVG can carry scripts when opened on its own.
PREVIEW_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"}
ATTACHED_MESSAGE_TYPES = {"message/rfc822", "message/global"}
# A conversation page carries the text of every message it shows: the newest this many.
CONVERSATION_SHOWN = 50


def safe_back(url: str | None) -> str:
    """The list URL to go back to: a path of our own list with its filters, never another site
    (an open redirect) or another page; anything else is the plain list."""
    if not url:
        return "/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or parts.path not in LIST_PATHS or "\\" in url:
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def back_from(request) -> str:
    """`?back=` when given, else the list the reader came from (the Referer, same host only)."""
    if "back" in request.GET:
        return safe_back(request.GET["back"])
    referer = urlsplit(request.META.get("HTTP_REFERER", ""))
    if referer.netloc and referer.netloc == request.get_host():
        return safe_back(referer.path + (f"?{referer.query}" if referer.query else ""))
    return "/"


def neighbours(user, message, back: str) -> tuple[str | None, str | None]:
    """(newer id, older id) of `message` in the list `back` names: same filters, same order
    (arrival, then id, newest first). None at either end, or when the filters are not valid."""
    params = QueryDict(urlsplit(back).query)
    params = params.copy()
    for name in ("cursor", "limit"):
        params.pop(name, None)
    try:
        rows = listing.filtered(user, params)
    except (listing.BadFilter, Http404):
        return None, None
    at, ident = message.arrived_at, message.pk
    newer = rows.filter(Q(arrived_at__gt=at) | Q(arrived_at=at, id__gt=ident)).order_by("arrived_at", "id")
    older = rows.filter(Q(arrived_at__lt=at) | Q(arrived_at=at, id__lt=ident)).order_by("-arrived_at", "-id")
    first = lambda qs: next(iter(qs.values_list("pk", flat=True)[:1]), None)  # noqa: E731
    return tuple(str(x) if x else None for x in (first(newer), first(older)))


def conversation(user, message) -> tuple[list[dict], int]:
    """The thread's messages, oldest first, for the conversation view: the open one and the
    newest are shown whole, the others folded to sender, date and snippet. Also how many the
    thread has in all (more than are shown when it is long)."""
    rows = listing.thread_rows(user, message)
    total = len(rows)
    if total < 2:
        return [], total
    if len(rows) > CONVERSATION_SHOWN:  # the newest ones, and always the open one
        kept = rows[-CONVERSATION_SHOWN:]
        rows = kept if any(r["id"] == message.pk for r in kept) else [
            r for r in rows if r["id"] == message.pk] + kept[1:]
    newest = max(rows, key=lambda r: (r["arrived_at"], r["id"]))["id"]
    ids = [r["id"] for r in rows]
    has_html = set(access.messages(user).filter(pk__in=ids).exclude(html_body="").values_list("pk", flat=True))
    texts = dict(access.messages(user).filter(pk__in=ids).values_list("pk", "text_body"))
    items = []
    for row in rows:
        item = serializers.message_row(row)
        item.update(current=row["id"] == message.pk, expanded=row["id"] in (message.pk, newest),
                    has_html=row["id"] in has_html, text_body=texts.get(row["id"], ""),
                    body_url=reverse("frontend:message_body", args=[row["id"]]))
        items.append(item)
    return items, total


def reader_context(request, message) -> dict:
    back = back_from(request)
    newer, older = neighbours(request.user, message, back)
    html = message.html_body or ""
    items, total = conversation(request.user, message)
    return {
        "conversation": items,
        "thread_size": total,
        "back": back,
        "newer_id": newer,
        "older_id": older,
        "flag_words": wording.flags(message.flags or []),
        "warnings": [wording.parse_warning(w) for w in message.parse_warnings or []],
        "has_remote_images": "data-remote-src" in html,
        "is_empty": not (message.text_body or "").strip() and not html.strip(),
        "status_words": wording.message_status(message),
        "previews": {str(a.pk) for a in message.attachments.all()
                     if downloads.base_type(a.content_type) in PREVIEW_TYPES},
        "attached_messages": {str(a.pk) for a in message.attachments.all()
                              if downloads.base_type(a.content_type) in ATTACHED_MESSAGE_TYPES},
    }


def _kept_original(request, message_id):
    """The reader's message whose original is kept; 404 when it is not the reader's or not kept."""
    item = access.get_or_404(access.messages(request.user), pk=message_id)
    if not item.raw:
        raise Http404("the original of this message is not kept")
    return item


@login_required
@require_GET
def message_raw(request, message_id):
    """The original source as plain text for the Original view (never rendered as markup)."""
    item = _kept_original(request, message_id)
    # A stream, not raw.open(): on a bucket that would download the whole message first.
    with storage.open_stream(item.raw.name) as handle:
        data = handle.read(RAW_SHOWN_BYTES + 1)
    text = data[:RAW_SHOWN_BYTES].decode("utf-8", "replace")
    if len(data) > RAW_SHOWN_BYTES:
        text += "\n\n[… cut here: the source is longer than 2 MB. Download the .eml for all of it.]\n"
    response = downloads.locked_down(HttpResponse(text, content_type="text/plain; charset=utf-8"))
    response["Content-Disposition"] = "inline"
    return response


@login_required
@require_GET
def message_eml(request, message_id):
    """The original, byte for byte, as a .eml download."""
    item = _kept_original(request, message_id)
    name = downloads.eml_filename(item.subject)
    return downloads.stored_response(item.raw.name, as_attachment=True, filename=name,
                                     content_type="application/octet-stream")


@login_required
@require_GET
def attachment_preview(request, attachment_id):
    """A raster image attachment shown inline (the thumbnail in the attachment list), with the
    download's locked-down headers; anything else is a 404, so this never serves markup."""
    item = access.get_or_404(access.attachments(request.user), pk=attachment_id)
    content_type = downloads.base_type(item.content_type)
    if content_type not in PREVIEW_TYPES:
        raise Http404("no preview for this type")
    return downloads.inline_response(item.file.name, content_type)


@login_required
@require_GET
def attached_message(request, attachment_id):
    """An attached message (message/rfc822) read like a message: its headers, its HTML (sanitized,
    in the reader's sandboxed frame: frontend.views.attached_message_body) or its text, its parts
    by name, and what the parser found wrong."""
    item = access.get_or_404(access.attachments(request.user).select_related("message"), pk=attachment_id)
    if downloads.base_type(item.content_type) not in ATTACHED_MESSAGE_TYPES:
        raise Http404("not an attached message")
    parsed = parse_message(storage.read_bytes(item.file.name))
    return render(request, "frontend/attached_message.html", {
        "attachment": item, "parent": item.message, "parsed": parsed,
        "warnings": [wording.parse_warning(w) for w in parsed.warnings],
        "back": reverse("frontend:message", args=[item.message_id]),
        "has_html": bool(parsed.html_body.strip()),
        "has_remote_images": "data-remote-src" in parsed.html_body,
        "body_url": reverse("frontend:attached_message_body", args=[item.pk]),
    })
