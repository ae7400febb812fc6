"""Which conversation a message belongs to.

In order of trust: Gmail's own thread id (X-GM-THRID, when sync learnt one), the thread of a
message it replies to or references (same owner), else the same normalized subject with at least
one participant in common, active within THREAD_WINDOW.

A write batch is threaded at once (assign_threads): a few queries read every candidate the batch
can need, then each message is threaded in order against those rows as the batch itself changes
them, so the batch ends exactly as one message at a time would have left it (a reply joins its
parent of the same batch; two of one conversation share one new thread).
"""

from collections import Counter
from datetime import timedelta

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Count, Q

from mailgate.bulk_update import update_each
from pipeline.models import Message, Thread
from pipeline.threading_keys import normalize_subject

THREAD_WINDOW = timedelta(days=30)
_SUBJECT_CANDIDATES = 20  # the newest this many threads of a subject are looked at, as ever


def participants(message: Message) -> list[str]:
    addresses = [message.sender_address] + [p.get("address", "") for p in (message.to or []) + (message.cc or [])]
    return sorted({a.strip().lower() for a in addresses if a and a.strip()})


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
    """Put `message` in a thread (creating one if needed) and update the thread's summary: the
    batch of one (assign_threads), after joining or creating the thread of `gm_thrid` if given."""
    if gm_thrid and not (message.thread_id and Thread.objects.filter(pk=message.thread_id).exists()):
        message.thread = _gmail_thread(message, gm_thrid, normalize_subject(message.subject)[:998])
    return assign_threads([message])[0]


def assign_threads(messages: list[Message]) -> list[Thread]:
    """Put each message in a thread, in order, creating threads as needed and updating their
    summaries; returns each message's thread (also set on the message).

    Call inside the standardize transaction; the messages must already carry their parsed fields.
    A thread already set (e.g. by sync from X-GM-THRID) is kept. Queries, whatever the batch size:
    the preset threads, the referenced messages and their threads, the subject candidates, one
    INSERT of the new threads, and for threads that existed one count and one executemany."""
    if not messages:
        return []
    batch = _Batch(messages)
    chosen: list[Thread] = []
    for i, message in enumerate(messages):
        thread = batch.known.get(message.thread_id) if message.thread_id else None
        thread = thread or batch.by_references(i, chosen) or batch.by_subject(i)
        if thread is None:
            # Its summary is this message's alone; later messages of the batch may still join it.
            thread = Thread(owner_id=message.owner_id, subject=message.subject[:998],
                            normalized_subject=batch.keys[i], participants=batch.people[i][:200],
                            first_message_at=batch.whens[i], last_message_at=batch.whens[i])
            batch.new.append(thread)
        else:
            _join(thread, message, batch.keys[i], batch.people[i], batch.whens[i])
        chosen.append(thread)
    batch.save(chosen)
    for message, thread in zip(messages, chosen):
        message.thread = thread  # now that every new thread has its pk
    return chosen


# What joining a message changes on its thread (_join, and the count in _Batch.save).
_JOINED_FIELDS = ("subject", "normalized_subject", "participants", "first_message_at", "last_message_at",
                  "message_count")


def _join(thread: Thread, message: Message, key: str, people: list[str], when) -> None:
    if not thread.subject:  # sync creates Gmail threads before any message is standardized
        thread.subject, thread.normalized_subject = message.subject[:998], key
    thread.participants = sorted(set(thread.participants or []) | set(people))[:200]
    if when is not None:
        thread.first_message_at = min(filter(None, [thread.first_message_at, when]))
        thread.last_message_at = max(filter(None, [thread.last_message_at, when]))


def _newest(items, when_of, nulls_largest: bool) -> list:
    """`items` in the database's ORDER BY when DESC: NULL first where the database sorts NULL as
    the largest value (PostgreSQL), last where as the smallest (SQLite)."""
    dated = sorted((x for x in items if when_of(x) is not None), key=when_of, reverse=True)
    undated = [x for x in items if when_of(x) is None]
    return undated + dated if nulls_largest else dated + undated


class _Batch:
    """What a batch's threading reads, loaded up front, then kept current while its messages are
    threaded: `known` holds every existing thread read (by pk, changed in memory as messages join),
    `new` the threads the batch creates."""

    def __init__(self, messages: list[Message]):
        self.messages = messages
        self.position = {m.pk: i for i, m in enumerate(messages)}
        self.keys = [normalize_subject(m.subject)[:998] for m in messages]
        self.people = [participants(m) for m in messages]
        self.whens = [m.date or m.received_at for m in messages]
        self.nulls_largest = connections[router.db_for_read(Message)].features.nulls_order_largest
        self.new: list[Thread] = []
        self.known: dict = Thread.objects.in_bulk({m.thread_id for m in messages if m.thread_id})
        # Only a message without a (still existing) thread of its own looks further.
        seeking = [i for i, m in enumerate(messages) if self.known.get(m.thread_id) is None]
        self.rows = self._referenced(seeking)
        self._load(Thread.objects.in_bulk({row[4] for row in self.rows} - set(self.known)).values())
        self._load(self._subject_candidates(seeking))

    def _load(self, threads) -> None:
        for thread in threads:
            self.known.setdefault(thread.pk, thread)

    def references(self, i: int) -> set[str]:
        message = self.messages[i]
        return set([r for r in [*(message.references or []), message.in_reply_to] if r][-100:])

    def _referenced(self, seeking: list[int]) -> list[tuple]:
        """(pk, owner_id, message_id, date, thread_id) of every message with a thread that a
        seeking message references, in one query: what the batch finds in the database before
        it writes (its own rows included, as they are until written)."""
        wanted: dict = {}
        for i in seeking:
            wanted.setdefault(self.messages[i].owner_id, set()).update(self.references(i))
        condition = Q()
        for owner_id, ids in wanted.items():
            if ids:
                condition |= Q(owner_id=owner_id, message_id__in=sorted(ids))
        if not condition:
            return []
        return list(Message.objects.filter(condition, thread__isnull=False).order_by()
                    .values_list("pk", "owner_id", "message_id", "date", "thread_id"))

    def _subject_candidates(self, seeking: list[int]):
        """Threads of a seeking message's owner and subject, within the window of any message of
        the batch with that subject, in one query (each message applies its own window)."""
        spans: dict = {}
        for i in seeking:
            if self.keys[i]:
                spans.setdefault((self.messages[i].owner_id, self.keys[i]), []).append(self.whens[i])
        condition = Q()
        for (owner_id, key), whens in spans.items():
            term = Q(owner_id=owner_id, normalized_subject=key)
            if None not in whens:
                term &= Q(last_message_at__gte=min(whens) - THREAD_WINDOW,
                          first_message_at__lte=max(whens) + THREAD_WINDOW)
            condition |= term
        return Thread.objects.filter(condition).order_by() if condition else []

    def by_references(self, i: int, chosen: list[Thread]) -> Thread | None:
        """The thread of the newest message (by Date) of this owner that message i references, as
        the rows stand when message i's turn comes: the batch's earlier messages as written."""
        ids = self.references(i)
        if not ids:
            return None
        message = self.messages[i]
        found = [(date, self.known.get(thread_id)) for pk, owner_id, message_id, date, thread_id in self.rows
                 if owner_id == message.owner_id and message_id in ids and pk != message.pk
                 and self.position.get(pk, len(self.messages)) > i]
        found += [(earlier.date, chosen[j]) for j, earlier in enumerate(self.messages[:i])
                  if earlier.owner_id == message.owner_id and earlier.message_id in ids]
        newest = _newest(found, lambda row: row[0], self.nulls_largest)
        return newest[0][1] if newest else None

    def by_subject(self, i: int) -> Thread | None:
        key, when, owner_id = self.keys[i], self.whens[i], self.messages[i].owner_id
        if not key:
            return None
        candidates = [t for t in [*self.known.values(), *self.new]
                      if t.owner_id == owner_id and t.normalized_subject == key and (
                          when is None or (t.last_message_at is not None and t.first_message_at is not None
                                           and t.last_message_at >= when - THREAD_WINDOW
                                           and t.first_message_at <= when + THREAD_WINDOW))]
        people = set(self.people[i])
        for thread in _newest(candidates, lambda t: t.last_message_at, self.nulls_largest)[:_SUBJECT_CANDIDATES]:
            if set(thread.participants or []) & people:
                return thread
        return None

    def save(self, chosen: list[Thread]) -> None:
        """One INSERT for the new threads; for the threads that existed, one count and one
        executemany UPDATE."""
        members = Counter(id(thread) for thread in chosen)
        for thread in self.new:
            thread.message_count = members[id(thread)]
        if self.new:
            Thread.objects.bulk_create(self.new)  # pks come back (SQLite >= 3.35, PostgreSQL)
        created = {id(thread) for thread in self.new}
        joined = {thread.pk: thread for thread in chosen if id(thread) not in created}
        if not joined:
            return
        # Its messages outside this batch, plus the batch's own: what counting after each
        # message's write would end with.
        outside = dict(Message.objects.filter(thread_id__in=list(joined)).exclude(pk__in=list(self.position))
                       .order_by().values("thread_id").annotate(n=Count("pk")).values_list("thread_id", "n"))
        for pk, thread in joined.items():
            thread.message_count = outside.get(pk, 0) + members[id(thread)]
        # What _join changed, for every joined thread in one executemany (a save() each was one
        # statement per reply of the batch).
        update_each(Thread, list(_JOINED_FIELDS), ["id"],
                    [[getattr(thread, name) for name in _JOINED_FIELDS] + [pk] for pk, thread in joined.items()])
