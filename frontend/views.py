"""Server-rendered pages (inbox, message, pipeline dashboard), the message body frame and
attachment downloads. Data on the pages comes from the JSON API (frontend/api.py) through small
scripts in static/frontend/; every lookup goes through frontend.access.
"""

import html as html_lib
import re
from urllib.parse import quote, unquote

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from frontend import access, downloads, reader, serializers
from mailgate import storage
from mailgate.realtime import current_seq
from pipeline.parsing.message import parse_message
from pipeline.parsing.sanitize import enable_remote_images

# The message body frame. No script source at all; styles inline only; images from the message
# itself (data: URLs and its inline parts, served by message_inline: browsers cannot resolve cid:
# URLs) until the reader asks for remote ones. frame-ancestors lets only our own pages embed it.
# {inline} is the absolute URL of this message's inline endpoint: an origin-plus-path source,
# because the sandboxed frame's origin is opaque, and it admits no other URL of ours (empty for
# an attached message: data: images only).
BODY_CSP = "default-src 'none'; img-src data: {inline}; style-src 'unsafe-inline'"
BODY_CSP_REMOTE = "default-src 'none'; img-src data: {inline} https: http:; style-src 'unsafe-inline'"
# sandbox: the frame's own sandbox attribute, again in the response, so the body opened on its own
# (top-level, or framed without the attribute) also gets an opaque origin and runs nothing.
BODY_CSP_TAIL = ("; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
                 "; sandbox allow-popups allow-popups-to-escape-sandbox")
# What of BODY_CSP_TAIL a meta tag can carry (frame-ancestors and sandbox work in headers only).
BODY_META_TAIL = "; base-uri 'none'; form-action 'none'"
# Mail is laid out for a window of its own: wide pictures and tables shrink to the frame, and
# the frame (sized to this document's height by the reader) never needs a scrollbar of its own.
# The body, not the viewport, scrolls sideways (html overflow hidden stops the propagation), so
# its scrollbar is inside the height the reader measures.
BODY_STYLE = ("html{overflow:hidden}body{font-family:sans-serif;margin:8px;overflow-wrap:anywhere;overflow-x:auto}"
              "img{max-width:100%;height:auto}table{max-width:100%}pre{white-space:pre-wrap}")
# Opened on its own the body has an opaque origin (the CSP sandbox), so the browser sends its
# image requests cross-site: the SameSite=Lax session cookie does not go with them. The
# inline URL therefore carries a signed token naming the message and the reader, minted only by
# the access-checked body view; the endpoint checks that reader's access again on every request.
INLINE_TOKEN_SALT = "frontend.views.message_inline"
INLINE_TOKEN_MAX_AGE = 3600  # seconds; the body frame (no-store) mints fresh ones on every load
# Inline parts shown in the frame: raster images only. SVG (image/svg+xml) can carry scripts
# when opened on its own, so like the sanitizer's data: URLs it is not served inline.
INLINE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif",
                      "image/x-icon", "image/vnd.microsoft.icon"}

# sanitize_html output (nh3) writes every attribute as name="value", so this is exact on it.
_CID_SRC = re.compile(r'(<img\b[^>]*?\ssrc=")cid:([^"]*)(")', re.IGNORECASE)


def _content_id(url_value: str) -> str:
    """The Content-ID a `cid:` URL names (RFC 2392: percent-encoded, no angle brackets)."""
    return unquote(html_lib.unescape(url_value)).strip().strip("<>").strip()


def inline_token(message, user) -> str:
    return signing.dumps([str(message.pk), user.pk], salt=INLINE_TOKEN_SALT)


def _link_inline_images(html: str, message, user) -> str:
    """Point `<img src="cid:...">` at message_inline for the parts the message has; others stay
    `cid:` (which the browser cannot load, so nothing is fetched)."""
    if "cid:" not in html.lower():
        return html
    known = {cid.lower() for cid in message.attachments.exclude(content_id="").values_list("content_id", flat=True)}
    base = reverse("frontend:message_inline", args=[message.pk, inline_token(message, user)])

    def link(match):
        cid = _content_id(match.group(2))
        if cid.lower() not in known:
            return match.group(0)
        return f"{match.group(1)}{base}?cid={quote(cid, safe='')}{match.group(3)}"

    return _CID_SRC.sub(link, html)


def _page(request, template, **context):
    context.setdefault("seq", current_seq(request.user.pk))
    return render(request, template, context)


# The last path segment of folders clients use to archive ("Archive", "[Gmail]/All Mail" aside).
_ARCHIVE_NAME = re.compile(r"(^|[/.])(archive|archives)$", re.IGNORECASE)


def _archive_folders(accounts) -> dict[int, int]:
    """Each account's archive folder (special-use \\Archive, else one named Archive), for the
    `e` key; an account without one cannot archive."""
    found = {}
    for account in accounts:
        folders = [f for f in account.folders.all() if f.present and f.selectable]
        marked = [f for f in folders if f.special_use == "\\Archive"] or [f for f in folders if _ARCHIVE_NAME.search(f.name)]
        if marked:
            found[account.pk] = marked[0].pk
    return found


def _add_account_url(user) -> str:
    # The in-app setup page when this build has one, else the admin's form (staff only).
    for name in ("frontend:account_add", "frontend:account_new", "frontend:accounts"):
        try:
            return reverse(name)
        except NoReverseMatch:
            continue
    return reverse("admin:imap_account_add") if user.is_staff else ""


@login_required
@require_GET
def inbox(request):
    accounts = list(access.accounts(request.user).prefetch_related("folders").order_by("display_name", "pk"))
    return _page(request, "frontend/inbox.html", accounts=accounts,
                 trash_ids=access.trash_folder_ids(request.user),
                 inbox_data={"archive": _archive_folders(accounts), "addAccountUrl": _add_account_url(request.user)},
                 add_account_url=_add_account_url(request.user))


@login_required
@require_GET
def message(request, message_id):
    item = access.get_or_404(access.messages(request.user).select_related("account"), pk=message_id)
    detail = serializers.message_detail(item, request.user)
    deliveries = [serializers.delivery(d, request.user)
                  for d in item.deliveries.select_related("service", "message").order_by("created_at")]
    return _page(request, "frontend/message.html", message=item, detail=detail,
                 timeline=serializers.timeline(item, request.user), deliveries=deliveries,
                 **reader.reader_context(request, item))


@login_required
@require_GET
@xframe_options_sameorigin
def message_body(request, message_id):
    """The sanitized HTML, alone, for a sandboxed iframe (`?remote=1` restores remote images)."""
    item = access.get_or_404(access.messages(request.user), pk=message_id)
    remote = request.GET.get("remote") == "1"
    html = _link_inline_images(item.html_body or "", item, request.user)
    inline = request.build_absolute_uri(reverse("frontend:message_inline_base", args=[item.pk]))
    return _body_response(html, inline, remote)


@login_required
@require_GET
@xframe_options_sameorigin
def attached_message_body(request, attachment_id):
    """An attached message's (message/rfc822) HTML, sanitized when parsed here like any message's,
    for the same sandboxed frame. Its inline images are not served (they are parts of the
    attachment, not of a stored message): the frame admits data: images only."""
    item = access.get_or_404(access.attachments(request.user), pk=attachment_id)
    if downloads.base_type(item.content_type) not in reader.ATTACHED_MESSAGE_TYPES:
        raise Http404("not an attached message")
    html = parse_message(storage.read_bytes(item.file.name)).html_body
    return _body_response(html, "", request.GET.get("remote") == "1")


def _body_response(html: str, inline: str, remote: bool) -> HttpResponse:
    """Sanitized HTML as the body frame's document, under BODY_CSP (remote images only when asked)."""
    if remote:
        html = enable_remote_images(html)
    policy = (BODY_CSP_REMOTE if remote else BODY_CSP).format(inline=inline)
    # The reader puts this document into its frame as srcdoc (to size the frame to it, see
    # bodyframe.js), where response headers do not apply: the same policy travels in a meta tag,
    # ahead of the mail's own markup. (A policy the mail adds can only narrow it further.)
    document = ('<!doctype html><html><head><meta charset="utf-8">'
                f'<meta http-equiv="Content-Security-Policy" content="{html_lib.escape(policy + BODY_META_TAIL)}">'
                '<meta name="referrer" content="no-referrer">'
                f"<style>{BODY_STYLE}</style>"
                f"</head><body>{html}</body></html>")
    response = HttpResponse(document, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = policy + BODY_CSP_TAIL
    response["Referrer-Policy"] = "no-referrer"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


def inline_base(request, message_id):
    """The common prefix of a message's inline URLs: named for the frame's CSP, serves nothing."""
    raise Http404("not found")


@require_GET
def message_inline(request, message_id, token):
    """One inline image of a message by Content-ID (`?cid=`), for `<img>` in the body frame.

    Access-checked like every download, for the reader named in the signed token (see
    INLINE_TOKEN_SALT for why not the session); anything but a raster image is a 404, so this URL
    can never serve markup or scripts from our origin.
    """
    try:
        token_message, user_id = signing.loads(token, salt=INLINE_TOKEN_SALT, max_age=INLINE_TOKEN_MAX_AGE)
    except (signing.BadSignature, ValueError, TypeError):  # forged, expired or malformed
        raise Http404("not found") from None
    reader = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if token_message != str(message_id) or reader is None:
        raise Http404("not found")
    item = access.get_or_404(access.messages(reader), pk=message_id)
    cid = request.GET.get("cid", "").strip().strip("<>").strip()
    if not cid:
        raise Http404("not found")
    # Inline parts first: a Content-ID is meant to be unique, but mail is what it is.
    part = item.attachments.filter(content_id__iexact=cid).order_by("-is_inline", "position").first()
    content_type = downloads.base_type(part.content_type) if part else ""
    if part is None or content_type not in INLINE_IMAGE_TYPES:
        raise Http404("not found")
    response = downloads.inline_response(part.file.name, content_type)
    response["Referrer-Policy"] = "no-referrer"
    return response


@login_required
@require_GET
def attachment(request, attachment_id):
    item = access.get_or_404(access.attachments(request.user), pk=attachment_id)
    return downloads.attachment_response(item)


@login_required
@require_GET
def pipeline(request):
    return _page(request, "frontend/pipeline.html")


@require_GET
def favicon(request):
    """/favicon.ico, asked for by pages without a <link rel=icon> (the admin's): our SVG icon."""
    return redirect(static("frontend/favicon.svg"), permanent=True)
