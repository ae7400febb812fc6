"""standardize: raw RFC 822 bytes → the standard Message fields, attachments and thread.

parse_message (pipeline/parsing/) never raises; what can fail here is storage or the database,
and those leave the message RECEIVED for the sweeper. Running it twice changes nothing: the claim
admits one worker, attachment ids are derived from (message, position) and the rows are unique.
"""

import hashlib
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.db import transaction

from mailgate import storage
from mailgate.bulk_update import update_each
from pipeline import audit, claims, clock, distribute, events, loops, parsing, queue, threads
from pipeline.ingest import read_raw
from pipeline.models import Attachment, Event, Message, Subscription, attachment_upload_path
from pipeline.parsing.filenames import safe_filename
from pipeline.queue import Stage
from pipeline.semantic import embed as embedding

log = logging.getLogger(__name__)


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
        # Written (whole) before the transaction that inserts its row; a crash in between leaves an
        # object the orphan sweep removes, and a rerun writes the same name again.
        row.file.name = storage.write(attachment_upload_path(row, row.filename), payload)
        rows.append(row)
    return rows


def relayed_list_ids(owner_id) -> set[str]:
    addresses = Subscription.objects.filter(service__owner_id=owner_id).values_list("address", flat=True)
    return loops.list_ids_for_addresses(addresses)


def standardize(message_id) -> str:
    """One message (tests, benches); see standardize_batch."""
    return standardize_batch([message_id])


class _Parsed:
    """One claimed message, parsed, its attachment files written: what the batch's write needs."""

    def __init__(self, message: Message, fields: dict, reason: str, attachments: list[Attachment]):
        self.message, self.fields, self.reason, self.attachments = message, fields, reason, attachments


def _parse_one(message: Message, list_ids_of) -> _Parsed:
    raw = read_raw(message)
    parsed = parse(raw)
    fields = message_fields(parsed)
    headers = interest_headers(parsed)
    # Only a message with a List-Id can be a copy of a list we relay to: spare the query otherwise.
    list_ids = list_ids_of(message.owner_id) if headers.get("list-id") else ()
    reason = loops.suppression_reason(
        headers, content_type=_get(parsed, "headers", {}).get("content_type", ""),
        sender_address=fields["sender_address"], relayed_list_ids=list_ids)
    return _Parsed(message, fields, reason, store_attachments(message, parsed))


def standardize_batch(message_ids) -> str:
    """Stage task body for a batch of messages; returns what happened (for logs and tests): one
    message's outcome, or a count per outcome.

    One conditional UPDATE claims the batch (claims.claim_messages). Each message is read and
    parsed on its own (a parse never raises; a storage error is that message's crash, recorded on
    its timeline while the others go on, and re-raised at the end). The results are written every
    MAILGATE_STAGE_BATCH_BYTES of raw mail in one short transaction: the rows, the attachments and
    the audit rows in bulk, one live event per audience, and one distribute task per batch.
    (At most MAILGATE_STAGE_WRITE_BATCH messages per transaction, to keep the write lock short.)

    The first message of a batch of several goes on alone: written as soon as it is parsed, and
    once committed distributed (and its due deliveries sent) right here, by distribute's own code
    and claims, rather than queued: while both workers of a lane parse batches, a queued
    distribute waits for one of them (bench/pipeline.py --backlog: the first webhook left after
    each worker had standardized and then distributed 100 messages). The rest of the batch
    follows as above. So does a message alone (a push) with MAILGATE_HAND_ON_ALONE: two queue
    hops fewer between its IDLE push and its webhook."""
    messages = claims.claim_messages(message_ids, Message.Status.RECEIVED)
    outcomes: list[str] = []
    list_ids: dict = {}

    def list_ids_of(owner_id):
        if owner_id not in list_ids:
            list_ids[owner_id] = relayed_list_ids(owner_id)
        return list_ids[owner_id]

    pending, pending_bytes = [], 0
    # The first message parsed goes on alone (see above).
    head = len(messages) > 1 or (len(messages) == 1 and settings.MAILGATE_HAND_ON_ALONE)
    # A storage error is that message's crash: recorded, the others go on, the sweeper retries it.
    with claims.each_message(Message.Status.RECEIVED, "standardize") as each:
        for message in messages:
            parsed = each(message, _parse_one, message, list_ids_of)
            if parsed is None:
                continue
            pending.append(parsed)
            pending_bytes += message.size or 0
            # Written in short transactions: on SQLite each holds the one write lock that the live
            # lane's sync and stages wait for (a batch of 50 in one transaction delayed a push by
            # seconds under load).
            if (head or pending_bytes >= settings.MAILGATE_STAGE_BATCH_BYTES
                    or len(pending) >= settings.MAILGATE_STAGE_WRITE_BATCH):
                outcomes += _write(pending, hand_on_now=head)
                pending, pending_bytes, head = [], 0, False
        if pending:
            outcomes += _write(pending)
    if len(message_ids) == 1:
        return outcomes[0] if outcomes else "skipped"
    counts: dict = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "skipped"


def _write(batch: list[_Parsed], hand_on_now: bool = False) -> list[str]:
    """Write one batch's results in one transaction; returns each message's outcome.
    `hand_on_now`: distribute the standardized ones here once committed, instead of queueing them."""
    now = clock.now()
    outcomes, rows, attachments, onward, done = [], [], [], [], []
    with transaction.atomic():
        for item in batch:
            for name, value in item.fields.items():
                setattr(item.message, name, value)
        threads.assign_threads([item.message for item in batch])
        results = [_result(item) for item in batch]
        moved = _move_rows(batch, results, now)
        for item, (status, reason) in zip(batch, results):
            message, fields = item.message, item.fields
            if message.pk not in moved:  # our claim expired and another worker finished it: leave its result
                outcomes.append("lost claim")
                continue
            attachments += item.attachments
            message.status, message.suppressed_reason = status, reason[:200]
            # Read by people on the message page: counts in words, no internal ids.
            detail = _count(len(item.attachments), "attachment")
            if fields["parse_warnings"]:
                detail += f", {_count(len(fields['parse_warnings']), 'parse warning')}"
            rows.append(audit.event(Event.Kind.STANDARDIZED, message, detail=detail))
            if reason:
                kind = Event.Kind.HISTORY if status == Message.Status.HISTORY else Event.Kind.SUPPRESSED
                rows.append(audit.event(kind, message, detail=reason))
            if status == Message.Status.STANDARDIZED:
                onward.append(message.pk)
            done.append(message)
            outcomes.append({Message.Status.SUPPRESSED: "suppressed",
                             Message.Status.HISTORY: "history"}.get(status, "standardized"))
        if attachments:
            Attachment.objects.bulk_create(attachments, ignore_conflicts=True)
        audit.record_all(rows)
        if not hand_on_now:
            queue.enqueue_on_commit(Stage.DISTRIBUTE, onward)
        embedding.queue_after_standardize(done)  # searchable by meaning moments later
        _publish(done)
        if hand_on_now and onward:  # last: its live events go out before the next stage's
            transaction.on_commit(lambda: _distribute_now(onward))
    return outcomes


def _result(item: _Parsed) -> tuple[str, str]:
    """(status, reason) a parsed message moves to (the reason whole: the row keeps 200 characters)."""
    if item.reason:
        return Message.Status.SUPPRESSED, item.reason
    if item.message.arrival == Message.Arrival.HISTORY:
        return Message.Status.HISTORY, Message.HISTORY_REASON
    return Message.Status.STANDARDIZED, ""


# The columns the write sets besides the parsed fields (message_fields).
_RESULT_COLUMNS = ("thread", "status", "suppressed_reason", "claimed_by", "claimed_until", "attempts", "updated_at")


def _move_rows(batch: list[_Parsed], results: list[tuple[str, str]], now) -> set:
    """UPDATE each message row to its result WHERE id = ? AND status = RECEIVED AND claimed_by = ?
    (our claim), as one executemany (mailgate/bulk_update.py); returns the pks that moved."""
    names = [*batch[0].fields, *_RESULT_COLUMNS]
    rows = []
    for item, (status, reason) in zip(batch, results):
        values = {**item.fields, "thread": item.message.thread_id, "status": str(status),
                  "suppressed_reason": reason[:200], "claimed_by": "", "claimed_until": None, "attempts": 0,
                  "updated_at": now}
        rows.append([values[name] for name in names]
                    + [item.message.pk, str(Message.Status.RECEIVED), item.message.claimed_by])
    everyone = update_each(Message, names, ["id", "status", "claimed_by"], rows) == len(rows)
    if everyone:
        return {item.message.pk for item in batch}
    # Some claim was lost: tell our rows from the other worker's by what we wrote, down to `now`
    # (the other worker's write carries its own time).
    wrote = {item.message.pk: (str(status), item.message.thread_id) for item, (status, _) in zip(batch, results)}
    found = Message.objects.filter(pk__in=list(wrote), updated_at=now, claimed_by="").values_list(
        "pk", "status", "thread_id")
    return {pk for pk, status, thread_id in found if wrote[pk] == (status, thread_id)}


def _distribute_now(message_ids) -> None:
    """Distribute messages this task just standardized, in this task (their claims and crash
    boundary are distribute's own). A failure there is recorded on the message by distribute and
    does not fail this batch: the message waits STANDARDIZED under distribute's claim, and the
    sweeper queues it after the deadline, as for a failed distribute task."""
    try:
        distribute.distribute_batch(message_ids, handed_on=True)
    except Exception:
        log.warning("distribute of %s, handed on by standardize, failed; the sweeper retries it", message_ids)


def _publish(messages: list[Message]) -> None:
    """message.new for what was standardized: a message alone with its fields (a pushed message's
    subject shows at once); a batch as one hint per audience (account, or owner without one)."""
    if len(messages) == 1:
        events.message_new(messages[0])
    else:
        events.messages_changed(messages, "message.new")


def _count(n: int, noun: str) -> str:
    return f"{'no' if n == 0 else n} {noun}{'' if n == 1 else 's'}"
