"""The IDLE manager: one asyncio loop holding the IDLE connections of its share of the accounts.

Every MAILGATE_IDLE_POLL seconds it compares the accounts that should be idling with the ones it
runs: it stops disabled, deleted and stopped accounts, restarts those whose config_version or push
folders changed, and claims leases on unowned accounts up to its fair share (imap/leases.py).
Every third of MAILGATE_IDLE_LEASE_SECONDS (or of the connection slot TTL, if shorter) it writes
its heartbeat and renews its leases and the connection slots of all its connections (imap/slots.py);
if it cannot (database unreachable) it drops its connections before the leases or slots run out,
so another manager can take over without two connections ever idling for one account, and no
sync or UI action is handed a slot whose connection is still open.

ORM calls run in a small thread pool (`db`), never on the loop; an IDLE push is handed to that pool
without waiting for it, so the loop goes straight back to reading the next push.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connections

from imap import connection, leases, slots
from imap.idle import watcher
from imap.idle.watcher import AccountConfig, AccountWatcher

log = logging.getLogger("imap.idle")

# Logins in flight at once: a restart with thousands of accounts must not hit the server (or our
# CPU) with all of them in the same second.
CONNECT_CONCURRENCY = 50
DB_THREADS = 4
PRUNE_EVERY = 600.0


def _db_call(fn, args, kwargs):
    # Like a request: drop a connection that broke or outlived CONN_MAX_AGE before using it.
    close_old_connections()
    return fn(*args, **kwargs)


def _db_call_into(loop, future, fn, args, kwargs):
    try:
        result = _db_call(fn, args, kwargs)
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
        # Bound as a default: Python unbinds `exc` when the except block ends, before the loop
        # runs the callback, and the awaiting coroutine would never hear of the error.
        loop.call_soon_threadsafe(lambda exc=exc: future.done() or future.set_exception(exc))
    else:
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(result))
    finally:
        connections.close_all()  # a one-off thread: its connection would outlive it


class Manager:
    """Run with `await Manager().run()`; `stop()` may be called from any thread."""

    def __init__(self, name: str | None = None):
        self.name = name or leases.new_manager_name()
        self.lease = float(settings.MAILGATE_IDLE_LEASE_SECONDS)
        self.poll = float(getattr(settings, "MAILGATE_IDLE_POLL", 2.0))
        self.renew_seconds = float(settings.MAILGATE_IDLE_RENEW)
        self.timeout = float(settings.MAILGATE_IMAP_TIMEOUT)
        self.close_timeout = min(2.0, self.timeout)
        self.slot_ttl = slots.default_ttl()
        self.watchers: dict[int, AccountWatcher] = {}
        self.executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="idle-db")
        self.ssl_context = None  # one per manager: a context with the CA store costs ~1 MB
        self.connect_gate: asyncio.Semaphore | None = None
        self.held_until = 0.0  # time.monotonic() after which our leases may have expired
        self.started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False

    # Database -----------------------------------------------------------------------------------
    async def db(self, fn, *args, **kwargs):
        try:
            future = self._loop.run_in_executor(self.executor, _db_call, fn, args, kwargs)
        except RuntimeError:
            # Interpreter exit (manager thread stopped from atexit): concurrent.futures already
            # refuses new work, but logging out and releasing leases still needs the database.
            future = self._loop.create_future()
            threading.Thread(target=_db_call_into, args=(self._loop, future, fn, args, kwargs), daemon=True).start()
        return await future

    async def db_quiet(self, fn, *args, **kwargs):
        """db() for status writes: a failure is logged, never fatal to a connection."""
        try:
            return await self.db(fn, *args, **kwargs)
        except Exception:  # noqa: BLE001 - logged; the next write or the catch-up repairs it
            log.warning("IDLE status write %s failed", getattr(fn, "__name__", fn), exc_info=True)
            return None

    def push(self, account_id: int, folder: str, flags_only: bool, received_at=None) -> None:
        """Queue the sync for an IDLE push without making the connection wait for the database."""
        future = self._loop.run_in_executor(self.executor, _db_call, watcher.push,
                                            (self.name, account_id, folder, flags_only, received_at), {})
        future.add_done_callback(functools.partial(_log_push_failure, account_id, folder))

    # Life cycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the manager to log out and release its leases (thread-safe, idempotent)."""
        self._stop_requested = True
        if self._loop is not None and self._stopping is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # loop already closed
                pass

    async def run(self, *, handle_signals: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self.connect_gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self.ssl_context = connection.ssl_context()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.stop)
        log.info("IDLE manager %s started", self.name)
        self.started.set()
        try:
            await self._control_loop()
        finally:
            await self._shutdown()
            log.info("IDLE manager %s stopped", self.name)

    async def _control_loop(self) -> None:
        beat_every = max(0.2, self.hold / 3)
        next_beat = next_poll = next_prune = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat_every
                await self._heartbeat()
            if self.watchers and time.monotonic() > self.held_until:
                # Heartbeats failed for most of a lease (or slot TTL): another manager may claim
                # these accounts any moment, and one account must never idle on two connections;
                # or sync may take our expired slots, and the account must never exceed its cap.
                log.error("IDLE manager %s cannot renew its leases; dropping %s accounts", self.name,
                          len(self.watchers))
                await self._stop_watchers(list(self.watchers), release=False)
            if now >= next_poll:
                next_poll = now + self.poll
                await self._reconcile()
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY
                await self.db_quiet(leases.prune_managers)
            try:
                await asyncio.wait_for(self._stopping.wait(), max(0.05, min(next_beat, next_poll) - time.monotonic()))
            except TimeoutError:
                pass

    @property
    def hold(self) -> float:
        """Seconds a heartbeat keeps our rows: leases and connection slots, whichever is shorter."""
        return min(self.lease, self.slot_ttl)

    async def _heartbeat(self) -> None:
        started = time.monotonic()
        renewed = {slot.holder for w in self.watchers.values() for slot in w.slots.values()}
        try:
            await self.db(leases.beat, self.name)
            held = await self.db(leases.renew, self.name)
            kept = await self.db(slots.renew_all, renewed, self.slot_ttl)
        except Exception:  # noqa: BLE001 - the database may be briefly away; held_until decides
            log.warning("IDLE manager %s: heartbeat failed", self.name, exc_info=True)
            return
        # Our rows now expire `hold` seconds after `started` at the latest; stop a safety margin
        # before that if no later heartbeat succeeds.
        self.held_until = started + self.hold - max(1.0, self.hold / 4)
        if len(kept) < len(renewed):
            for w in self.watchers.values():
                w.drop_unheld(renewed, kept)
        lost = [account_id for account_id in self.watchers if account_id not in held]
        if lost:
            log.warning("IDLE manager %s lost the leases of accounts %s", self.name, lost)
            await self._stop_watchers(lost, release=False)
        orphans = held.difference(self.watchers)
        if orphans:  # ours, but their watchers were dropped when heartbeats failed: start over
            await self.db_quiet(leases.release, self.name, orphans)

    async def _reconcile(self) -> None:
        try:
            wanted = await self.db(leases.wanted_accounts)
            managers = await self.db(leases.live_managers)
        except Exception:  # noqa: BLE001
            log.warning("IDLE manager %s: cannot read accounts", self.name, exc_info=True)
            return
        share = leases.fair_share(len(wanted), managers)
        gone = [aid for aid in self.watchers if aid not in wanted]
        changed = [aid for aid, w in self.watchers.items() if aid in wanted and w.key != wanted[aid]]
        if gone:
            await self._stop_watchers(gone, release=True)
        if changed:  # new password, server or push folders: reconnect, keeping the lease
            await self._stop_watchers(changed, release=False)
        excess = len(self.watchers) + len(changed) - share
        if excess > 0:
            shed = random.sample(list(self.watchers), min(excess, len(self.watchers)))
            log.info("IDLE manager %s hands %s accounts to other managers", self.name, len(shed))
            await self._stop_watchers(shed, release=True)
        start = list(changed)
        room = share - len(self.watchers) - len(start)
        if room > 0 and time.monotonic() < self.held_until and not self._stopping.is_set():
            candidates = [aid for aid in wanted if aid not in self.watchers and aid not in start]
            random.shuffle(candidates)  # managers starting together do not fight over the same rows
            try:
                start += await self.db(leases.claim, self.name, candidates, room)
            except Exception:  # noqa: BLE001
                log.warning("IDLE manager %s: claiming leases failed", self.name, exc_info=True)
        if start:
            await self._start_watchers(start)

    async def _start_watchers(self, account_ids) -> None:
        try:
            rows = await self.db(leases.load_configs, account_ids)
        except Exception:  # noqa: BLE001 - the leases stay ours; the next round retries
            log.warning("IDLE manager %s: cannot load accounts", self.name, exc_info=True)
            await self.db_quiet(leases.release, self.name, account_ids)
            return
        found = set()
        for row in rows:
            w = AccountWatcher(AccountConfig.from_row(row), self)
            self.watchers[w.config.id] = w
            found.add(w.config.id)
            w.start()
        missing = [aid for aid in account_ids if aid not in found]
        if missing:  # deleted meanwhile
            await self.db_quiet(leases.release, self.name, missing)
        log.info("IDLE manager %s: watching %s accounts (+%s)", self.name, len(self.watchers), len(found))

    async def _stop_watchers(self, account_ids, *, release: bool) -> None:
        stopping = [self.watchers.pop(aid) for aid in account_ids if aid in self.watchers]
        if not stopping:
            return
        await asyncio.gather(*(w.stop(self.stop_timeout) for w in stopping))
        if release:
            await self.db_quiet(leases.release, self.name, [w.config.id for w in stopping])

    @property
    def stop_timeout(self) -> float:
        # DONE and LOGOUT may each take close_timeout; the slot release is one more query.
        return 3 * self.close_timeout + 1

    async def _shutdown(self) -> None:
        await self._stop_watchers(list(self.watchers), release=False)
        await self.db_quiet(leases.release, self.name)
        await self.db_quiet(leases.forget_manager, self.name)
        await self._close_pool_connections()
        self.executor.shutdown(wait=False)

    async def _close_pool_connections(self) -> None:
        """Close the database connection of every pool thread: a thread that ends with its
        connection open leaves the server session behind until garbage collection (on PostgreSQL,
        an idle backend; in tests, a test database that cannot be dropped). A barrier holds each
        closer until DB_THREADS of them run at once, so each runs on a different thread."""
        barrier = threading.Barrier(DB_THREADS)

        def close():
            try:
                barrier.wait(timeout=self.close_timeout)
            except threading.BrokenBarrierError:
                pass  # the pool could not start every thread: close this one's anyway
            connections.close_all()

        try:
            await asyncio.gather(*(self._loop.run_in_executor(self.executor, close) for _ in range(DB_THREADS)))
        except RuntimeError:
            pass  # interpreter exit: the pool takes no more work, and the process is ending anyway


def _log_push_failure(account_id, folder, future) -> None:
    if not future.cancelled() and future.exception() is not None:
        # The next push, the reconnect catch-up or the scheduled sync picks the mail up.
        log.error("account %s %s: could not queue the sync for an IDLE push", account_id, folder,
                  exc_info=future.exception())


# Running it -------------------------------------------------------------------------------------

_thread_lock = threading.Lock()
_thread: threading.Thread | None = None


def run_foreground() -> None:
    """`manage.py idle`: run until SIGTERM or SIGINT, then log out and release the leases."""
    asyncio.run(Manager().run(handle_signals=True))


def start_manager_thread() -> threading.Thread:
    """Run a manager in a daemon thread of this process (the web server, see idle_autostart).

    Idempotent. At interpreter exit the manager logs out and releases its leases (atexit runs
    before daemon threads are killed); if the process is killed, the leases simply expire.
    """
    global _thread
    with _thread_lock:
        if _thread is not None and _thread.is_alive():
            return _thread
        manager = Manager()
        thread = threading.Thread(target=lambda: asyncio.run(manager.run()), name="mailgate-idle", daemon=True)
        thread.manager = manager
        thread.start()
        atexit.register(_stop_thread, thread)
        _thread = thread
        return thread


def _stop_thread(thread: threading.Thread, timeout: float = 10.0) -> None:
    thread.manager.stop()
    thread.join(timeout)
