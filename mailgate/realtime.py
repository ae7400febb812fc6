"""Live events: push a hint to the websocket groups of the users allowed to see a row, after commit.

The ground of the stack: imap, inbound, pipeline and the web UI all publish through here, and the
frontend's consumer (frontend/consumers.py) forwards what arrives to the browser.

The websocket is a hint and the API the truth: channels-redis delivers at most once, so every
event carries a per-user `seq` (1, 2, 3, ...) and pages re-fetch from the API after a reconnect or
a gap in `seq`.

Event types (see docs/api.md): message.new, message.updated, delivery.updated, account.status.
Call `publish_for_account` / `publish_for_message` when you have the object: the audience comes from
the model (`Account.viewer_ids()`, `Message.viewer_ids()`), the one place that says who may see it.

Cost: a transaction's hints go out together when it commits: one statement numbers every hint
of every recipient at once (`UPDATE ... RETURNING`), and one hop to an event loop sends them all,
each group's in order: the caller's loop when it has one (a sync view under daphne), else one
long-lived loop thread per process (worker, IDLE pool, shell), never a new thread per event. A
backlog of 2,000 messages stored in one transaction took 2,000 numbering statements (each its own
write transaction, 1-4 s after the commit in bench/pipeline.py --backlog); it now takes one.
"""

import asyncio
import hashlib
import logging
import os
import threading
import weakref
from collections import Counter, defaultdict

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import F

from mailgate import embedded_redis
from mailgate.models import EventSequence

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def session_group(session_key: str) -> str:
    """The group of one login session's sockets (closed at logout). Hashed: the key itself is a
    credential and would otherwise sit in Redis key names."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


# The channel layer --------------------------------------------------------------------------------

def ensure_embedded_redis() -> None:
    """Start the embedded Redis, or join the one running, when the channel layer uses it. This
    process then holds it until it exits (see mailgate/embedded_redis.py)."""
    if embedded_redis.in_use():
        embedded_redis.ensure_running(settings.MAILGATE_EMBEDDED_REDIS_SOCKET)


def channel_layer():
    """The process's channel layer, with the embedded Redis started first where it is the one in use."""
    ensure_embedded_redis()
    return get_channel_layer()


# Sequence numbers ---------------------------------------------------------------------------------

def _returning_supported(connection) -> bool:
    # UPDATE ... RETURNING: PostgreSQL always, SQLite from 3.35 (Django 5.2 requires 3.31).
    return connection.vendor == "postgresql" or (
        connection.vendor == "sqlite" and connection.Database.sqlite_version_info >= (3, 35))


def _increment_returning(connection, table: str, user_ids: list[int], counts=None) -> dict[int, int]:
    placeholders = ", ".join(["%s"] * len(user_ids))
    by, by_params = "1", []
    if counts and any(counts[uid] != 1 for uid in user_ids):  # several hints of one commit
        by = "CASE user_id " + " ".join(["WHEN %s THEN %s"] * len(user_ids)) + " END"
        by_params = [value for uid in user_ids for value in (uid, counts[uid])]
    if connection.vendor == "postgresql":
        # A plain multi-row UPDATE locks rows in the order its scan meets them, and every update
        # moves a row's tuple, so two publishers can meet the same rows in opposite orders and
        # deadlock (seen in CI). SELECT ... ORDER BY ... FOR UPDATE sorts before it locks: every
        # publisher takes the locks in user_id order, then updates rows it already holds (READ
        # COMMITTED re-reads each row's newest version, so no increment is lost).
        sql = (f"WITH locked AS (SELECT user_id FROM {table} WHERE user_id IN ({placeholders}) "
               f"ORDER BY user_id FOR UPDATE) "
               f"UPDATE {table} AS seq SET value = seq.value + {by.replace('user_id', 'seq.user_id')} FROM locked "
               f"WHERE seq.user_id = locked.user_id RETURNING seq.user_id, seq.value")
        params = [*user_ids, *by_params]  # in the statement's order: the CTE's, then the CASE's
    else:
        # SQLite: one writer at a time for the whole database, so one statement cannot deadlock.
        sql = (f"UPDATE {table} SET value = value + {by} WHERE user_id IN ({placeholders}) "
               f"RETURNING user_id, value")
        params = [*by_params, *user_ids]
    with connection.cursor() as cursor:
        # One statement is atomic by itself: each row's new value belongs to this call alone.
        cursor.execute(sql, params)
        return {user_id: value for user_id, value in cursor.fetchall()}


def next_seqs(user_ids) -> dict[int, int]:
    """Atomically take the next sequence number of each user (any process, any database)."""
    return take_seqs(Counter(set(user_ids)))


def take_seqs(counts: Counter) -> dict[int, int]:
    """Atomically take `counts[user]` consecutive sequence numbers of each user; returns the last
    of each user's run (its run is last - count + 1 ... last)."""
    ids = sorted(uid for uid, count in counts.items() if count > 0)
    if not ids:
        return {}
    connection = connections[router.db_for_write(EventSequence)]
    if not _returning_supported(connection):
        return {uid: _next_seq_portable(uid, counts[uid]) for uid in ids}
    table = connection.ops.quote_name(EventSequence._meta.db_table)
    taken = _increment_returning(connection, table, ids, counts)
    missing = [uid for uid in ids if uid not in taken]
    if missing:  # a user's first event: create the row, then count it like any other
        EventSequence.objects.bulk_create([EventSequence(user_id=uid) for uid in missing], ignore_conflicts=True)
        taken.update(_increment_returning(connection, table, missing, counts))
    return taken


def _next_seq_portable(user_id: int, count: int = 1) -> int:
    with transaction.atomic():
        # The UPDATE holds the row lock until commit, so the value read back is ours alone.
        if not EventSequence.objects.filter(user_id=user_id).update(value=F("value") + count):
            EventSequence.objects.get_or_create(user_id=user_id)
            EventSequence.objects.filter(user_id=user_id).update(value=F("value") + count)
        return EventSequence.objects.filter(user_id=user_id).values_list("value", flat=True).get()


def next_seq(user_id: int) -> int:
    """Atomically take the user's next sequence number."""
    return next_seqs([user_id])[user_id]


def current_seq(user_id: int) -> int:
    """The last number handed out (0 if none): pages start counting from here."""
    return EventSequence.objects.filter(user_id=user_id).values_list("value", flat=True).first() or 0


# Sending ------------------------------------------------------------------------------------------

_layer_checked = False


def _layer():
    """The process's channel layer. channel_layer() also makes sure the embedded Redis runs (a
    socket round trip), which is needed once per process, not once per event; after a failed send
    it is checked again."""
    global _layer_checked
    if not _layer_checked:
        layer = channel_layer()
        _layer_checked = True
        return layer
    return get_channel_layer()  # cached per process by channels (reset when settings change)


async def _group_send_all(layer, messages: list[tuple[str, dict]]) -> list:
    """Send each (group, message); the groups at once, each group's messages in their order (a
    page that sees seq 5 before 4 re-fetches for nothing). Returns each send's result in turn."""
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, (group, _) in enumerate(messages):
        by_group[group].append(index)
    results: list = [None] * len(messages)

    async def in_order(indexes):
        for index in indexes:
            group, message = messages[index]
            try:
                await layer.group_send(group, message)
            except Exception as exc:
                results[index] = exc

    await asyncio.gather(*(in_order(indexes) for indexes in by_group.values()))
    return results


# A send waits at most this long for the layer (a hung Redis must not hang the pipeline).
SEND_TIMEOUT = 10.0

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def _caller_loop_is_up_the_stack() -> bool:
    """True inside sync_to_async (a sync view under daphne, database_sync_to_async): there the
    send must run on that loop, which is also where the in-memory layer's consumers wait."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop is not None and getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid()


def _background_loop() -> asyncio.AbstractEventLoop:
    """This process's sending loop, started on first use (and again in a forked child)."""
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mailgate-events", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _run(coroutine_function, *args):
    if _caller_loop_is_up_the_stack():
        return async_to_sync(coroutine_function)(*args)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called on an event loop thread: blocking here would stall it; refuse like async_to_sync
        raise RuntimeError("mailgate.realtime cannot publish from an event loop thread; use sync_to_async")
    # No loop up the stack: async_to_sync would start a thread and a loop for this one call, and
    # channels-redis would open (and drop) a connection on it. The long-lived loop keeps both.
    future = asyncio.run_coroutine_threadsafe(coroutine_function(*args), _background_loop())
    try:
        return future.result(SEND_TIMEOUT)
    except TimeoutError:
        future.cancel()
        raise


def _send(hints: list["_Hint"]) -> None:
    """Number and send hints, in their order: one statement and one hop for all of them."""
    global _layer_checked
    counts = Counter(uid for hint in hints for uid in hint.user_ids)
    try:
        last = take_seqs(counts)
        # Each user's run of numbers, handed out in the hints' order.
        next_of = {uid: value - counts[uid] + 1 for uid, value in last.items()}
    except Exception:  # e.g. the table is missing: the hint still goes out, pages just can't see gaps
        log.warning("could not number %d hint(s) for users %s", len(hints), sorted(counts), exc_info=True)
        next_of = {}
    messages, recipients = [], []
    for hint in hints:
        for uid in hint.user_ids:
            seq = next_of.get(uid)
            if seq is not None:
                next_of[uid] = seq + 1
            messages.append((user_group(uid), {"type": "mailgate.event", "event": hint.event_type,
                                               "data": hint.data, "seq": seq}))
            recipients.append((uid, hint.event_type))
    try:
        results = _run(_group_send_all, _layer(), messages)  # one hop for every recipient
    except Exception:  # a lost hint must never fail the pipeline stage that sent it
        _layer_checked = False
        log.warning("could not publish %d hint(s) to users %s", len(hints), sorted(counts), exc_info=True)
        return
    for (uid, event_type), result in zip(recipients, results):
        if isinstance(result, BaseException):
            _layer_checked = False
            log.warning("could not publish %s to user %s", event_type, uid, exc_info=result)


def end_session(session_key: str | None) -> None:
    """Close the live sockets opened under this login session, now (called at logout). A failure is
    logged: the logout itself has happened either way."""
    global _layer_checked
    if not session_key:
        return
    try:
        _run(_group_send_all, _layer(), [(session_group(session_key), {"type": "mailgate.session_ended"})])
    except Exception:
        _layer_checked = False
        log.warning("could not close the sockets of a session that logged out", exc_info=True)


class _Hint:
    """One publish(), waiting for its transaction's commit: it is that publish's on_commit callback,
    so Django drops it with a savepoint that rolls back, exactly as any callback."""

    __slots__ = ("user_ids", "event_type", "data", "sent", "__weakref__")

    def __init__(self, user_ids: list[int], event_type: str, data: dict):
        self.user_ids, self.event_type, self.data, self.sent = user_ids, event_type, data, False

    def __call__(self) -> None:
        if not self.sent:
            _send(_due_with(self))


# This thread's hints waiting for a commit, in the order published. Weak: Django's list of
# on_commit callbacks holds them, so when a commit's callbacks run, those of rolled-back savepoints
# (dropped from that list, and freed at once) are already gone from here.
_waiting = threading.local()


def _waiting_list() -> list:
    hints = _waiting.__dict__.setdefault("hints", [])
    if hints and hints[0]() is None:  # a rollback dropped them: forget them
        hints[:] = [ref for ref in hints if ref() is not None]
    return hints


def _due_with(first: _Hint) -> list[_Hint]:
    """The first hint of a commit to run takes every later one of its commit along, unsent: the
    callbacks after it are the rest of that commit's (or of a test's captured callbacks)."""
    alive = [hint for hint in (ref() for ref in _waiting_list()) if hint is not None]
    start = next((i for i, hint in enumerate(alive) if hint is first), None)
    if start is None:  # published outside a transaction: on its own
        due = [first]
    else:
        due = [hint for hint in alive[start:] if not hint.sent]
        _waiting.hints = [weakref.ref(hint) for hint in alive[:start] if not hint.sent]
    for hint in due:
        hint.sent = True
    return due


def publish(user_ids, event_type: str, data: dict) -> None:
    """Send `event_type` with `data` to each user's group once the current transaction commits
    (at once outside a transaction); a commit's hints are numbered and sent together."""
    ids = sorted({uid for uid in ([user_ids] if isinstance(user_ids, int) else user_ids) if uid})
    if not ids:
        return
    hint = _Hint(ids, event_type, data)
    if transaction.get_connection().in_atomic_block:
        _waiting_list().append(weakref.ref(hint))
    transaction.on_commit(hint)


def publish_for_account(account, event_type: str, data: dict) -> None:
    """Publish to everyone who may see `account`: its owner and its members."""
    publish(account.viewer_ids(), event_type, data)


def publish_for_message(message, event_type: str, data: dict | None = None) -> None:
    """Publish to everyone who may see `message` (owner, and its account's owner and members).

    `data` defaults to {"id": ..., "status": ..., "account": ...}; pages fetch the rest.
    """
    if data is None:
        data = {"id": str(message.pk), "status": message.status, "account": message.account_id}
    publish(message.viewer_ids(), event_type, data)
