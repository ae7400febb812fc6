"""Audit trail: one Event row per stage transition, naming the worker (host:pid) that made it."""

import os
import socket

from mailgate.bulk_insert import InsertIgnoringConflicts
from pipeline.models import Event


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def event(kind, message=None, delivery=None, detail: str = "") -> Event:
    """An unsaved audit row (see record and record_all)."""
    if message is None and delivery is not None:
        message = delivery.message
    owner_id = message.owner_id if message is not None else None
    summary = _summary(message.sender_address, message.subject) if message is not None else ""
    return Event(
        kind=kind, owner_id=owner_id, message=message, delivery=delivery, worker=worker_name(),
        detail=str(detail)[:10000], summary=summary[:500],
    )


def event_for(kind, message_id, owner_id, *, sender: str = "", subject: str = "", detail: str = "") -> Event:
    """An unsaved audit row for a message known by id only (the bulk stages: sync's phase 1 and 2)."""
    return Event(kind=kind, owner_id=owner_id, message_id=message_id, worker=worker_name(),
                 detail=str(detail)[:10000], summary=_summary(sender, subject))


def _summary(sender: str, subject: str) -> str:
    """The line an event keeps after retention purges its message. Empty while neither is known
    (raw bytes not parsed yet): retention fills it from the standardized message."""
    if not sender and not subject:
        return ""
    return f"{sender or '?'}: {(subject or '(no subject)')[:200]}"[:500]


def record(kind, message=None, delivery=None, detail: str = "") -> Event:
    """Write an audit row. Call it inside the transaction that makes the transition, or before a
    side effect (a send) so the row exists even if the worker dies during it."""
    row = event(kind, message, delivery, detail)
    row.save(force_insert=True)
    return row


_COLUMNS = ["kind", "owner", "message", "delivery", "worker", "detail", "summary"]


def record_all(rows: list[Event]) -> None:
    """Write several audit rows (one batch's) in one prepared INSERT, in the given order. Not
    bulk_create: its per-row compile cost was a sixth of a profiled sync (FETCHED and RECEIVED)."""
    if rows:
        inserter().insert([values(r) for r in rows])


def inserter() -> InsertIgnoringConflicts:
    """The INSERT of audit rows; each row as `values` gives it."""
    return InsertIgnoringConflicts(Event, _COLUMNS, {}, ignore_conflicts=False)


def values(row: Event) -> tuple:
    return row.kind, row.owner_id, row.message_id, row.delivery_id, row.worker, row.detail, row.summary
