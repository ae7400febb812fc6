"""Plain dicts for the JSON API and the live pages (one shape per object, used everywhere)."""

import re

from django.urls import reverse
from django.utils import timezone

from imap import trash
from imap.models import IdleSession

from frontend import access, wording
from frontend.listing import FLAGGED, SEEN
from pipeline.models import Message


def _iso(value):
    return value.isoformat() if value else None


# html2text debris in snippets: "[http://host/x.png?version=1]", "<https://...>", markdown links
# and images, and bare URLs (cut off by the snippet's length or not); a list row shows words, the
# message page shows the links.
_SNIPPET_DEBRIS = re.compile(r"!?\[([^\]]*)\]\((?:[^)\s]*)\)|\[(?:https?|mailto|cid):[^\]]*(?:\]|$)|<(?:https?|mailto):[^>]*(?:>|$)"
                             r"|\b(?:https?://|www\.)\S+")


def clean_snippet(text: str) -> str:
    text = _SNIPPET_DEBRIS.sub(lambda m: m.group(1) or "", text or "")
    return re.sub(r"\s+", " ", text).strip()


def message_row(row: dict) -> dict:
    """A list row, from a `.values(*listing.ROW_FIELDS)` dict."""
    flags = row.get("flags") or []
    return {
        "id": str(row["id"]),
        "account": row["account_id"],
        "folder": row["folder_id"],
        "thread": row["thread_id"],
        "subject": row["subject"],
        "sender": {"name": row["sender_name"], "address": row["sender_address"]},
        "date": _iso(row["date"]),
        "received_at": _iso(row["received_at"]),
        "arrived_at": _iso(row["arrived_at"]),
        "snippet": clean_snippet(row["snippet"]),
        "flags": flags,
        "unread": SEEN not in flags,
        "flagged": FLAGGED in flags,
        "has_attachments": row["has_attachments"],
        "status": row["status"],
        "url": reverse("frontend:message", args=[row["id"]]),
    }


def attachment(item) -> dict:
    return {"id": str(item.pk), "filename": item.filename, "content_type": item.content_type, "size": item.size,
            "is_inline": item.is_inline, "url": reverse("frontend:attachment", args=[item.pk])}


def message_detail(message, user) -> dict:
    flags = message.flags or []
    locations = list(message.locations.filter(expunged_at__isnull=True).select_related("folder"))
    trash_ids = set(trash.folder_ids([message.account_id])) if message.account_id else set()
    return {
        "id": str(message.pk),
        "account": message.account_id,
        "source": message.source,
        "thread": message.thread_id,
        "message_id": message.message_id,
        "subject": message.subject,
        "sender": {"name": message.sender_name, "address": message.sender_address},
        "to": message.to,
        "cc": message.cc,
        "date": _iso(message.date),
        "received_at": _iso(message.received_at),
        "arrived_at": _iso(message.arrived_at),
        "flags": flags,
        "labels": message.labels,
        "unread": SEEN not in flags,
        "flagged": FLAGGED in flags,
        "status": message.status,
        "status_label": wording.message_status(message),
        "flag_words": wording.flags(flags),
        "suppressed_reason": message.suppressed_reason,
        "size": message.size,
        "text_body": message.text_body,
        "has_html": bool(message.html_body),
        "body_url": reverse("frontend:message_body", args=[message.pk]),
        "attachments": [attachment(a) for a in message.attachments.all()],
        "locations": [{"folder": loc.folder_id, "folder_name": loc.folder.name, "uid": loc.uid, "flags": loc.flags,
                       "trash": loc.folder_id in trash_ids} for loc in locations],
        # Gone from every folder but the Trash (or from the server altogether): deleted. Mail
        # imported from files that no sync found on the server never had a folder there.
        "deleted": bool(message.account_id) and all(loc.folder_id in trash_ids for loc in locations)
        and not (message.source == Message.Source.IMPORT and not locations and not message.locations.exists()),
        "parse_warnings": message.parse_warnings,
        "warnings": [wording.parse_warning(w) for w in message.parse_warnings or []],
        "can_move_or_delete": access.owned_messages(user).filter(pk=message.pk).exists(),
    }


def timeline(message, user) -> list[dict]:
    """The message's audit rows. A delivery's rows name its address and error texts: their
    detail is blank for a reader who does not own the delivery's service (access.manages_delivery)."""
    managed = access.managed_delivery_ids(user, message)
    return [{"at": _iso(e.at), "kind": e.kind, "label": e.get_kind_display(),
             "detail": e.detail if not e.delivery_id or e.delivery_id in managed else "",
             "delivery": str(e.delivery_id) if e.delivery_id else None,
             # What the page shows for the delivery: its service (and address, for its owner), never its id.
             "delivery_label": _delivery_name(e.delivery, e.delivery_id in managed) if e.delivery_id else "",
             "worker": e.worker}
            for e in message.events.select_related("delivery__service").order_by("at", "id")[:1000]]


def _delivery_name(item, manages: bool) -> str:
    if item is None:
        return ""
    return f"{item.service.name} → {item.address}" if manages and item.address else item.service.name


def idle(account, *, staff: bool = False) -> dict | None:
    """The account's IDLE connection (imap.IdleSession, same fields as imap.leases.status), or
    None before any IDLE manager took it on. Read from the row the caller select_related, so a
    list of accounts costs no query per account.

    `connected` is only believed while the lease is live: a manager that died without releasing
    leaves connected=True behind until another manager takes the lease over. The lease owner
    (host:pid of a server process) is shown to staff only.
    """
    try:
        session = account.idle_session
    except IdleSession.DoesNotExist:
        return None
    live = bool(session.lease_owner and session.lease_expires_at and session.lease_expires_at > timezone.now())
    data = {"connected": session.connected and live,
            "idling_since": _iso(session.idling_since) if session.connected and live else None,
            "last_push_at": _iso(session.last_push_at), "last_error": session.last_error,
            "last_error_at": _iso(session.last_error_at), "reconnect_count": session.reconnect_count,
            "leased": live, "lease_expires_at": _iso(session.lease_expires_at)}
    if staff:
        data["lease_owner"] = session.lease_owner
    return data


def account(item, *, staff: bool = False) -> dict:
    idle_data = idle(item, staff=staff)
    return {
        "id": item.pk,
        "display_name": item.display_name,
        "email": item.email,
        "enabled": item.enabled,
        "state": item.state,
        "state_label": item.get_state_display(),
        "last_error": item.last_error,
        "last_error_at": _iso(item.last_error_at),
        "last_sync_at": _iso(item.last_sync_at),
        "backoff_until": _iso(item.backoff_until),
        "idle": idle_data,
        "health": wording.account_health(item, idle_data),
        "folders": [{"id": f.pk, "name": f.name, "special_use": f.special_use,
                     "last_synced_at": _iso(f.last_synced_at)}
                    for f in item.folders.all() if f.present and f.selectable],
    }


def delivery(item, user) -> dict:
    """A delivery; its address and last error only for the service's owner (access.manages_delivery),
    who alone may retry it (`retryable`)."""
    manages = access.manages_delivery(user, item)
    return {
        "id": str(item.pk),
        "message": str(item.message_id),
        "subject": item.message.subject,
        "service": item.service.name,
        "address": item.address if manages else "",
        "status": item.status,
        "status_label": wording.delivery_status(item.status),
        "attempts": item.attempts,
        "last_error": item.last_error if manages else "",
        "not_before": _iso(item.not_before),
        "sent_at": _iso(item.sent_at),
        "created_at": _iso(item.created_at),
        "updated_at": _iso(item.updated_at),
        # Retry: failed and dead ones start over; a retrying one is sent now instead of at not_before.
        "retryable": manages and item.status in ("failed", "dead", "retrying"),
        "managed": manages,
    }
