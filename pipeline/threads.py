"""Which conversation a message belongs to.

In order of trust: Gmail's own thread id (X-GM-THRID, when sync learnt one), the thread of a
message it replies to or references (same owner), else the same normalized subject with at least
one participant in common, active within THREAD_WINDOW.
"""

from datetime import timedelta

from django.db import IntegrityError, transaction

from pipeline.models import Message, Thread
from pipeline.threading_keys import normalize_subject

THREAD_WINDOW = timedelta(days=30)


def participants(message: Message) -> list[str]:
    addresses = [message.sender_address] + [p.get("address", "") for p in (message.to or []) + (message.cc or [])]
    return sorted({a.strip().lower() for a in addresses if a and a.strip()})


def _by_references(message: Message) -> Thread | None:
    ids = [i for i in [*(message.references or []), message.in_reply_to] if i]
    if not ids:
        return None
    known = (Message.objects.filter(owner_id=message.owner_id, message_id__in=ids[-100:], thread__isnull=False)
             .exclude(pk=message.pk).order_by("-date").values_list("thread_id", flat=True).first())
    return Thread.objects.filter(pk=known).first() if known else None


def _by_subject(message: Message, key: str, people: list[str], when) -> Thread | None:
    if not key:
        return None
    candidates = Thread.objects.filter(owner_id=message.owner_id, normalized_subject=key)
    if when is not None:
        candidates = candidates.filter(last_message_at__gte=when - THREAD_WINDOW,
                                       first_message_at__lte=when + THREAD_WINDOW)
    for thread in candidates.order_by("-last_message_at")[:20]:
        if set(thread.participants or []) & set(people):
            return thread
    return None


def _gmail_thread(message: Message, gm_thrid: int, key: str) -> Thread:
    try:
        with transaction.atomic():
            thread, _ = Thread.objects.get_or_create(owner_id=message.owner_id, gm_thrid=gm_thrid,
                                                     defaults={"subject": message.subject[:998],
                                                               "normalized_subject": key})
    except IntegrityError:  # a concurrent standardize created it first
        thread = Thread.objects.get(owner_id=message.owner_id, gm_thrid=gm_thrid)
    return thread


def assign_thread(message: Message, gm_thrid: int | None = None) -> Thread:
    """Put `message` in a thread (creating one if needed) and update the thread's summary.

    Call inside the standardize transaction; `message` must already carry its parsed fields.
    A thread already set (e.g. by sync from X-GM-THRID) is kept.
    """
    key = normalize_subject(message.subject)[:998]
    people = participants(message)
    when = message.date or message.received_at
    thread = None
    if message.thread_id:
        thread = Thread.objects.filter(pk=message.thread_id).first()
    if thread is None and gm_thrid:
        thread = _gmail_thread(message, gm_thrid, key)
    thread = thread or _by_references(message) or _by_subject(message, key, people, when)
    if thread is None:
        # A new thread holds this message alone: write its summary in the INSERT, nothing to count.
        thread = Thread.objects.create(owner_id=message.owner_id, subject=message.subject[:998],
                                       normalized_subject=key, gm_thrid=gm_thrid, participants=people[:200],
                                       first_message_at=when, last_message_at=when, message_count=1)
        message.thread = thread
        return thread
    if not thread.subject:  # sync creates Gmail threads before any message is standardized
        thread.subject, thread.normalized_subject = message.subject[:998], key
    thread.participants = sorted(set(thread.participants or []) | set(people))[:200]
    if when is not None:
        thread.first_message_at = min(filter(None, [thread.first_message_at, when]))
        thread.last_message_at = max(filter(None, [thread.last_message_at, when]))
    thread.message_count = Message.objects.filter(thread=thread).exclude(pk=message.pk).count() + 1
    thread.save()
    message.thread = thread
    return thread
