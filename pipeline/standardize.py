"""standardize: raw RFC 822 bytes → the standard Message fields, attachments and thread.

parse_message (pipeline/parsing/) never raises; what can fail here is storage or the database,
and those leave the message RECEIVED for the sweeper. Running it twice changes nothing: the claim
admits one worker, attachment ids are derived from (message, position) and the rows are unique.
"""

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from pipeline import audit, claims, clock, events, loops, parsing, queue, threads
from pipeline.ingest import read_raw
from pipeline.models import Attachment, Event, Message, Subscription, attachment_upload_path
from pipeline.parsing.filenames import safe_filename
from pipeline.queue import Stage
from pipeline.semantic import embed as embedding



def parse(raw: bytes):
    """parse_message under mailgate's size limit (it never raises; an over-limit body becomes a
    warning and headers only)."""
    limits = parsing.Limits(max_total_bytes=settings.MAILGATE_MAX_MESSAGE_BYTES)
    # Looked up on the package at call time, so a test worker can substitute parse_message.
    return parsing.parse_message(raw, limits)


def _get(obj, name, default=None):
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def interest_headers(parsed) -> dict:
    """Loop-relevant headers by lower-case name, as parse_message decoded them; an absent header
    is left out (an empty Return-Path is a bounce, a missing one says nothing)."""
    parsed_headers = _get(parsed, "headers") or {}
    out = {}
    for key, name in parsing.HEADERS_OF_INTEREST.items():
        value = parsed_headers.get(key)
        if value is not None:
            out[name] = value
    return out


def _people(entries) -> list[dict]:
    people = []
    for entry in entries or []:
        if isinstance(entry, (tuple, list)) and len(entry) == 2:
            name, address = entry
        elif isinstance(entry, str):
            name, address = "", entry
        else:
            name, address = _get(entry, "name", ""), _get(entry, "address", "")
        people.append({"name": str(name or "")[:500], "address": str(address or "")[:500]})
    return people


def _aware(value):
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt_timezone.utc)


def message_fields(parsed) -> dict:
    references = [str(r)[:998] for r in (_get(parsed, "references") or [])][-100:]
    attachments = _get(parsed, "attachments") or []
    return {
        "message_id": str(_get(parsed, "message_id") or "")[:998],
        "in_reply_to": str(_get(parsed, "in_reply_to") or "")[:998],
        "references": references,
        "subject": str(_get(parsed, "subject") or ""),
        "sender_name": str(_get(parsed, "sender_name") or "")[:500],
        "sender_address": str(_get(parsed, "sender_address") or "")[:500],
        "to": _people(_get(parsed, "to")),
        "cc": _people(_get(parsed, "cc")),
        "date": _aware(_get(parsed, "date")),
        "text_body": str(_get(parsed, "text_body") or ""),
        "html_body": str(_get(parsed, "html_body") or ""),
        "markdown_body": str(_get(parsed, "markdown_body") or ""),
        "snippet": str(_get(parsed, "snippet") or "")[:300],
        "has_attachments": any(not _get(a, "is_inline", False) for a in attachments),
        "parse_warnings": [str(w)[:500] for w in (_get(parsed, "warnings") or [])][:100],
    }


def attachment_id(message_id, position: int) -> uuid.UUID:
    """Derived, not random: a re-run after a crash writes the same file instead of an orphan."""
    return uuid.uuid5(uuid.UUID(str(message_id)), f"attachment:{position}")


def store_attachments(message: Message, parsed) -> list[Attachment]:
    """Write attachment payloads to storage; return unsaved rows for positions not yet stored."""
    items = _get(parsed, "attachments") or []
    if not items:
        return []
    have = set(Attachment.objects.filter(message=message).values_list("position", flat=True))
    rows = []
    for position, item in enumerate(items):
        if position in have:
            continue
        payload = _get(item, "payload") or b""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        content_type = str(_get(item, "content_type") or "application/octet-stream")[:255]
        row = Attachment(
            id=attachment_id(message.pk, position), message=message, position=position,
            filename=safe_filename(_get(item, "filename") or "", fallback=f"attachment-{position + 1}.bin")[:255],
            content_type=content_type, size=_get(item, "size") or len(payload),
            sha256=str(_get(item, "sha256") or "")[:64], is_inline=bool(_get(item, "is_inline", False)),
            content_id=str(_get(item, "content_id") or "")[:500],
        )
        if not row.sha256:
            row.sha256 = hashlib.sha256(payload).hexdigest()
        name = attachment_upload_path(row, row.filename)
        if default_storage.exists(name):
            default_storage.delete(name)
        row.file.name = default_storage.save(name, ContentFile(payload))
        rows.append(row)
    return rows


def relayed_list_ids(owner_id) -> set[str]:
    addresses = Subscription.objects.filter(service__owner_id=owner_id).values_list("address", flat=True)
    return loops.list_ids_for_addresses(addresses)


def standardize(message_id) -> str:
    """Stage task body; returns what happened (for logs and tests)."""
    message = claims.claim_message(message_id, Message.Status.RECEIVED)
    if message is None:
        return "skipped"
    with claims.crash_boundary(message, Message.Status.RECEIVED, "standardize"):
        raw = read_raw(message)
        parsed = parse(raw)
        fields = message_fields(parsed)
        headers = interest_headers(parsed)
        # Only a message with a List-Id can be a copy of a list we relay to: spare the query otherwise.
        list_ids = relayed_list_ids(message.owner_id) if headers.get("list-id") else ()
        reason = loops.suppression_reason(
            headers, content_type=_get(parsed, "headers", {}).get("content_type", ""),
            sender_address=fields["sender_address"], relayed_list_ids=list_ids)
        attachments = store_attachments(message, parsed)
        now = clock.now()
        with transaction.atomic():
            for name, value in fields.items():
                setattr(message, name, value)
            threads.assign_thread(message)
            if reason:
                status = Message.Status.SUPPRESSED
            elif message.arrival == Message.Arrival.HISTORY:
                status, reason = Message.Status.HISTORY, Message.HISTORY_REASON
            else:
                status = Message.Status.STANDARDIZED
            moved = Message.objects.filter(pk=message.pk, status=Message.Status.RECEIVED,
                                           claimed_by=message.claimed_by).update(
                **fields, thread=message.thread, status=status, suppressed_reason=reason[:200],
                claimed_by="", claimed_until=None, attempts=0, updated_at=now)
            if not moved:
                transaction.set_rollback(True)
                return "lost claim"
            if attachments:
                Attachment.objects.bulk_create(attachments, ignore_conflicts=True)
            message.status, message.suppressed_reason = status, reason[:200]
            detail = f"{len(attachments)} attachments, thread {message.thread_id}"
            if fields["parse_warnings"]:
                detail += f", {len(fields['parse_warnings'])} warnings"
            rows = [audit.event(Event.Kind.STANDARDIZED, message, detail=detail)]
            if reason:
                kind = Event.Kind.HISTORY if status == Message.Status.HISTORY else Event.Kind.SUPPRESSED
                rows.append(audit.event(kind, message, detail=reason))
            audit.record_all(rows)
            if status == Message.Status.STANDARDIZED:
                queue.enqueue_on_commit(Stage.DISTRIBUTE, [message.pk])
            embedding.queue_after_standardize(message)  # searchable by meaning moments later
            events.message_new(message)
        return {Message.Status.SUPPRESSED: "suppressed", Message.Status.HISTORY: "history"}.get(status, "standardized")
