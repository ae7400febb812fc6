"""Live events: push a hint to the websocket groups of the users allowed to see a row, after commit.

The ground of the stack: imap, inbound, pipeline and the web UI all publish through here, and the
frontend's consumer (frontend/consumers.py) forwards what arrives to the browser.

The websocket is a hint and the API the truth: channels-redis delivers at most once, so every
event carries a per-user `seq` (1, 2, 3, ...) and pages re-fetch from the API after a reconnect or
a gap in `seq`.

Event types (see docs/api.md): message.new, message.updated, delivery.updated, account.status.
Call `publish_for_account` / `publish_for_message` when you have the object: the audience comes from
the model (`Account.viewer_ids()`, `Message.viewer_ids()`), the one place that says who may see it.

Cost (the pipeline publishes ~4 events per message): one publish is one on_commit callback, one
statement that numbers every recipient at once (`UPDATE ... RETURNING`), and one hop to an event
loop that sends to every recipient's group together: the caller's loop when it has one (a sync
view under daphne), else one long-lived loop thread per process (worker, IDLE pool, shell), never
a new thread per event.
"""

import asyncio
import hashlib
import logging
import os
import threading

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


def _increment_returning(connection, table: str, user_ids: list[int]) -> dict[int, int]:
    placeholders = ", ".join(["%s"] * len(user_ids))
    if connection.vendor == "postgresql":
        # A plain multi-row UPDATE locks rows in the order its scan meets them, and every update
        # moves a row's tuple, so two publishers can meet the same rows in opposite orders and
        # deadlock (seen in CI). SELECT ... ORDER BY ... FOR UPDATE sorts before it locks: every
        # publisher takes the locks in user_id order, then updates rows it already holds (READ
        # COMMITTED re-reads each row's newest version, so no increment is lost).
        sql = (f"WITH locked AS (SELECT user_id FROM {table} WHERE user_id IN ({placeholders}) "
               f"ORDER BY user_id FOR UPDATE) "
               f"UPDATE {table} AS seq SET value = seq.value + 1 FROM locked "
               f"WHERE seq.user_id = locked.user_id RETURNING seq.user_id, seq.value")
    else:
        # SQLite: one writer at a time for the whole database, so one statement cannot deadlock.
        sql = (f"UPDATE {table} SET value = value + 1 WHERE user_id IN ({placeholders}) "
               f"RETURNING user_id, value")
    with connection.cursor() as cursor:
        # One statement is atomic by itself: each row's new value belongs to this call alone.
        cursor.execute(sql, user_ids)
        return {user_id: value for user_id, value in cursor.fetchall()}


def next_seqs(user_ids) -> dict[int, int]:
    """Atomically take the next sequence number of each user (any process, any database)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    connection = connections[router.db_for_write(EventSequence)]
    if not _returning_supported(connection):
        return {uid: _next_seq_portable(uid) for uid in ids}
    table = connection.ops.quote_name(EventSequence._meta.db_table)
    taken = _increment_returning(connection, table, ids)
    missing = [uid for uid in ids if uid not in taken]
    if missing:  # a user's first event: create the row, then count it like any other
        EventSequence.objects.bulk_create([EventSequence(user_id=uid) for uid in missing], ignore_conflicts=True)
        taken.update(_increment_returning(connection, table, missing))
    return taken


def _next_seq_portable(user_id: int) -> int:
    with transaction.atomic():
        # The UPDATE holds the row lock until commit, so the value read back is ours alone.
        if not EventSequence.objects.filter(user_id=user_id).update(value=F("value") + 1):
            EventSequence.objects.get_or_create(user_id=user_id)
            EventSequence.objects.filter(user_id=user_id).update(value=F("value") + 1)
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
    return await asyncio.gather(*(layer.group_send(group, message) for group, message in messages),
                                return_exceptions=True)


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


def _send(user_ids: list[int], event_type: str, data: dict) -> None:
    global _layer_checked
    try:
        seqs = next_seqs(user_ids)
    except Exception:  # e.g. the table is missing: the hint still goes out, pages just can't see gaps
        log.warning("could not number %s for users %s", event_type, user_ids, exc_info=True)
        seqs = {}
    messages = [(user_group(uid), {"type": "mailgate.event", "event": event_type, "data": data,
                                   "seq": seqs.get(uid)}) for uid in user_ids]
    try:
        results = _run(_group_send_all, _layer(), messages)  # one hop for every recipient
    except Exception:  # a lost hint must never fail the pipeline stage that sent it
        _layer_checked = False
        log.warning("could not publish %s to users %s", event_type, user_ids, exc_info=True)
        return
    for uid, result in zip(user_ids, results):
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


def publish(user_ids, event_type: str, data: dict) -> None:
    """Send `event_type` with `data` to each user's group once the current transaction commits."""
    ids = sorted({uid for uid in ([user_ids] if isinstance(user_ids, int) else user_ids) if uid})
    if ids:
        transaction.on_commit(lambda: _send(ids, event_type, data))


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
