"""The JSON API behind the pages (documented in docs/api.md). Thin views over frontend.listing,
frontend.actions and frontend.access; every lookup goes through access, so a foreign id is a 404.
"""

import json
import logging

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from frontend import access, actions, listing, semantic_search, serializers, throughput, wording
from imap.models import Folder
from mailgate.realtime import current_seq
from pipeline.models import Delivery

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A user's mistake in a request: answered 400 with this text."""


def api_view(view):
    """JSON errors instead of HTML pages, and a 401 instead of a login redirect."""

    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return JsonResponse({"error": "authentication required"}, status=401)
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return JsonResponse({"error": "not found"}, status=404)
        except access.NotAllowed as exc:
            return JsonResponse({"error": str(exc)}, status=403)
        except (BadRequest, listing.BadFilter, actions.BadAction) as exc:
            log.info("bad API request from user %s: %s", request.user.pk, exc)
            return JsonResponse({"error": str(exc)}, status=400)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def _json_body(request) -> dict:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


@require_GET
@api_view
def messages(request):
    """Keyset-paginated message list with filters and full-text search."""
    # Read before the rows: any event numbered after this is about data the rows may lack, and
    # the page will hear of it.
    seq_before = current_seq(request.user.pk)
    if request.GET.get("q", "").strip() and semantic_search.mode_of(request.GET) != "text":
        page = semantic_search.message_page(request.user, request.GET)  # mode=hybrid|semantic: ranked
    else:
        page = listing.message_page(request.user, request.GET)
    return JsonResponse({
        "results": [serializers.message_row(row) for row in page.rows],
        "next_cursor": page.next_cursor,
        "seq": seq_before,
    })


@require_GET
@api_view
def message_counts(request):
    """How many messages the list's filters (the same parameters) select, and how many are unread."""
    if request.GET.get("q", "").strip() and semantic_search.mode_of(request.GET) != "text":
        return JsonResponse(semantic_search.counts(request.user, request.GET))  # what the ranked list shows
    return JsonResponse(listing.counts(request.user, request.GET))


@require_GET
@api_view
def folders(request):
    """The sidebar: each folder of the user's accounts with its unread count, Trash marked."""
    unread = listing.folder_unread(request.user)
    trash_ids = set(access.trash_folder_ids(request.user))
    # Server folders, and the Imported folder of mail brought in from files (not on the server).
    rows = access.folders(request.user).filter(Folder.listed_filter()).order_by("account_id", "name")
    return JsonResponse({"results": [{"id": f.pk, "account": f.account_id, "name": f.name,
                                      "unread": unread.get(f.pk, 0), "trash": f.pk in trash_ids} for f in rows]})


@require_GET
@api_view
def message_detail(request, message_id):
    message = access.get_or_404(access.messages(request.user).select_related("account", "folder"), pk=message_id)
    return JsonResponse(serializers.message_detail(message, request.user))


@require_GET
@api_view
def message_thread(request, message_id):
    message = access.get_or_404(access.messages(request.user), pk=message_id)
    return JsonResponse({"results": [serializers.message_row(row) for row in listing.thread_rows(request.user, message)]})


@require_GET
@api_view
def message_events(request, message_id):
    message = access.get_or_404(access.messages(request.user), pk=message_id)
    return JsonResponse({"results": serializers.timeline(message, request.user)})


@require_GET
@api_view
def message_related(request, message_id):
    """The nearest messages in other threads, across the user's accounts, each with a reason."""
    message = access.get_or_404(access.messages(request.user), pk=message_id)
    rows = semantic_search.related(request.user, message)
    return JsonResponse({"results": [{**serializers.message_row(row), "reason": row["reason"],
                                      "similarity": row["similarity"]} for row in rows]})


@require_POST
@api_view
def batch(request):
    """Mark read/unread, flag/unflag, move, delete (to Trash) or delete for good (in Trash, with
    confirm) many messages; written back over IMAP."""
    body = _json_body(request)
    result = actions.apply(request.user, body.get("ids"), body.get("action"), body.get("folder"),
                           confirm=body.get("confirm", False))
    return JsonResponse(result.as_dict(), status=200 if not result.errors else 207)


@require_GET
@api_view
def accounts(request):
    rows = access.accounts(request.user).select_related("idle_session").prefetch_related("folders")
    staff = request.user.is_staff
    return JsonResponse({"results": [serializers.account(account, staff=staff) for account in rows]})


@require_GET
@api_view
def account_detail(request, account_id):
    account = access.get_or_404(access.accounts(request.user).select_related("idle_session")
                                .prefetch_related("folders"), pk=account_id)
    return JsonResponse(serializers.account(account, staff=request.user.is_staff))


@require_GET
@api_view
def deliveries(request):
    statuses = [s for s in request.GET.get("status", "").split(",") if s]
    unknown = set(statuses) - set(Delivery.Status.values)
    if unknown:
        raise BadRequest(f"unknown delivery status: {', '.join(sorted(unknown))}")
    try:
        limit = min(max(int(request.GET.get("limit", 100)), 1), 500)
    except ValueError:
        raise BadRequest("limit must be a number") from None
    rows = access.deliveries(request.user).select_related("message", "service")
    if statuses:
        rows = rows.filter(status__in=statuses)
    if request.GET.get("message"):
        rows = rows.filter(message_id=access.get_or_404(access.messages(request.user), pk=request.GET["message"]).pk)
    rows = rows.order_by("-updated_at", "-id")[:limit]
    return JsonResponse({"results": [serializers.delivery(d, request.user) for d in rows]})


@require_POST
@api_view
def delivery_retry(request, delivery_id):
    """A failed or dead delivery goes back to the queue, due now, with a fresh attempt count; a
    retrying one is sent now instead of waiting for its next try."""
    from pipeline import sending

    delivery = access.get_or_404(access.deliveries(request.user).select_related("service"), pk=delivery_id)
    if not access.manages_delivery(request.user, delivery):
        raise access.NotAllowed("only the service's owner can retry its deliveries")
    if delivery.status == Delivery.Status.RETRYING:
        moved = sending.requeue_deliveries(Delivery.objects.filter(pk=delivery.pk))
    elif delivery.status in (Delivery.Status.FAILED, Delivery.Status.DEAD):
        moved = sending.retry_deliveries(Delivery.objects.filter(pk=delivery.pk))
    else:
        return JsonResponse({"error": f"only failed, dead or retrying deliveries can be retried (this one is "
                                      f"{wording.delivery_status(delivery.status).lower()})"}, status=409)
    delivery.refresh_from_db()
    return JsonResponse({"requeued": bool(moved), "delivery": serializers.delivery(delivery, request.user)})


@require_GET
@api_view
def stats(request):
    """Counts per Message.status and Delivery.status, over what the user may see, and the words
    the pages show for each status."""
    return JsonResponse({**listing.stats(request.user), "labels": {
        "messages": {k: str(v) for k, v in wording.MESSAGE_WORDS.items()},
        "deliveries": {k: str(v) for k, v in wording.DELIVERY_WORDS.items()}}})


@require_GET
@api_view
def throughput_view(request):
    """What came in and went out in the last hour, the last day and each of its hours."""
    return JsonResponse(throughput.throughput(request.user))


@require_GET
@api_view
def seq(request):
    return JsonResponse({"seq": current_seq(request.user.pk)})
