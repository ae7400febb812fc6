"""Retention: remove messages older than MAILGATE_RETENTION_DAYS once nothing is pending for them.

The audit trail stays: each Event keeps a summary line (Event.message is SET_NULL) and a PURGED
event records what was removed. Raw files are content-addressed and shared by identical messages,
so one is deleted only when no remaining message references its sha256.

Each removed message leaves a tombstone (PurgedIdentity, written in the transaction that deletes
it): its identity must never enter the pipeline again, or a UIDVALIDITY rescan, a repeated import
or a re-delivered webhook would store and relay it a second time.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction

from mailgate import storage
from pipeline import audit, clock
from pipeline.models import Attachment, Delivery, Event, Message, PurgedIdentity

log = logging.getLogger(__name__)

# States in which the pipeline still works on a message; such a message is never purged.
_UNFINISHED = [Message.Status.HEADERS, Message.Status.RECEIVED, Message.Status.STANDARDIZED]
_PENDING_DELIVERY = [s for s in Delivery.Status.values if s not in Delivery.FINAL]


def expired(now=None):
    now = now or clock.now()
    cutoff = now - timedelta(days=settings.MAILGATE_RETENTION_DAYS)
    return (Message.objects.filter(received_at__lt=cutoff).exclude(status__in=_UNFINISHED)
            .exclude(deliveries__status__in=_PENDING_DELIVERY))


def _delete_file(name: str) -> None:
    try:
        storage.delete(name)
    except Exception:  # disk or bucket refused (OSError, botocore's ClientError): the row is gone
        # either way, and the orphan sweep (pipeline/orphans.py) tries the object again later.
        log.warning("could not delete stored file %s", name, exc_info=True)


def _tombstone(message: Message, now=None) -> None:
    """Remember the identity of a message about to be deleted (inside the caller's transaction)."""
    if message.account_id is not None:
        scope = {"account_id": message.account_id}
    elif message.channel_id is not None:
        scope = {"channel_id": message.channel_id}
    else:
        return  # no account or channel: no identity scope, nothing could recognise it again
    now = now or clock.now()
    # A second purge of the same identity (a concurrent purge run) refreshes the date; it never
    # fails the deletion.
    if not PurgedIdentity.objects.filter(identity=message.identity, **scope).update(purged_at=now):
        PurgedIdentity.objects.bulk_create([PurgedIdentity(identity=message.identity, purged_at=now, **scope)],
                                           ignore_conflicts=True)


def _still_expired(message) -> bool:
    """Whether `message` may still go, re-read inside the deleting transaction with its rows
    locked: an admin retry of one of its deliveries (or of the dead message itself) may have
    committed since the selection, and deleting it now would cascade the requeued work away.

    Deliveries first, then the message: a retry updates its delivery, then inserts an audit row
    whose foreign key locks the message, so locking in the same order cannot deadlock with it.
    A retry that comes after our locks waits for the commit and then finds nothing to requeue."""
    statuses = list(Delivery.objects.select_for_update().filter(message_id=message.pk)
                    .values_list("status", flat=True))
    if any(status in _PENDING_DELIVERY for status in statuses):
        return False
    return bool(list(Message.objects.select_for_update().filter(pk=message.pk).exclude(status__in=_UNFINISHED)
                     .values_list("pk", flat=True)))


def purge(dry_run: bool = False, now=None, selected=None) -> dict:
    """Remove expired messages with their files; returns counts (what would go, if dry_run).

    `selected`: the messages to work through, default expired(now); tests pass a selection made
    earlier to replay what happens when work is requeued between the selection and the delete."""
    counts = {"messages": 0, "attachments": 0, "raw_files": 0, "bytes": 0}
    for message in (expired(now).iterator(chunk_size=200) if selected is None else selected):
        files = list(Attachment.objects.filter(message=message).values_list("file", "size"))
        if dry_run:
            counts["messages"] += 1
            counts["attachments"] += len(files)
            counts["bytes"] += message.size
            continue
        with transaction.atomic():
            if not _still_expired(message):
                log.info("retention: message %s was requeued since it was selected; kept", message.pk)
                continue
            counts["messages"] += 1
            counts["attachments"] += len(files)
            counts["bytes"] += message.size
            summary = f"{message.sender_address or '?'}: {(message.subject or '(no subject)')[:200]}"[:500]
            Event.objects.filter(message=message, summary="").update(summary=summary)
            audit.record(Event.Kind.PURGED, message, detail=f"received {message.received_at:%Y-%m-%d}, "
                                                            f"{len(files)} attachments, {message.size} bytes")
            raw_name, sha = message.raw.name, message.raw_sha256
            _tombstone(message, now)
            message.delete()
        for name, _size in files:
            _delete_file(name)
        # After the delete has committed, so a concurrent purge of a twin sees one reference fewer.
        if raw_name and not Message.objects.filter(raw=raw_name).exists() and \
                not (sha and Message.objects.filter(raw_sha256=sha).exists()):
            _delete_file(raw_name)
            counts["raw_files"] += 1
    if counts["messages"]:
        log.info("retention %s: %s", "would remove" if dry_run else "removed", counts)
    return counts
