"""The IDLE connections of one account: one per push folder, each reconnecting on its own.

A connection's life: claim a connection slot (imap/slots.py; the manager renews it with every
heartbeat for as long as the connection lives), connect, log in, SELECT, IDLE; once
idling, queue a catch-up sync of the folder (mail that arrived while we were not listening); then
turn every EXISTS push into `enqueue_folder_sync(...)` and every EXPUNGE/FETCH push into a
flags-only one, renewing IDLE every MAILGATE_IDLE_RENEW seconds (DONE, NOOP, IDLE). Any failure
drops the connection and reconnects after an exponential backoff with jitter (at most 5 minutes).
A password that is refused MAILGATE_AUTH_FAILURE_LIMIT times or cannot be decrypted, or an OAuth2
grant the provider refuses, stops the account (imap/account_state.py) until the owner acts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import aioimaplib
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from imap import account_state, errors, leases, slots
from imap.connection import classify
from imap.idle.client import ConnectionLost, IdleClient, push_kinds
from imap.models import Account, is_loopback
from imap.oauth import tokens
from imap.queue import enqueue_folder_sync
from mailgate import backoff, crypto, metrics
from mailgate.db_sqlite3.priority import live_writes

log = logging.getLogger("imap.idle")

RECONNECT_BASE = 1.0
RECONNECT_MAX = 300.0
# A connection that stayed up this long was healthy: its next reconnect starts the backoff over.
STABLE_AFTER = 60.0


def backoff_delay(attempt: int, *, base: float = RECONNECT_BASE, cap: float = RECONNECT_MAX, rng=random) -> float:
    """Seconds to wait before reconnect number `attempt` (0-based).

    base * 2**attempt, capped at 5 minutes, with "equal jitter" (between half and all of it) so the
    thousand accounts a server restart dropped at once do not come back in lockstep.
    """
    return backoff.equal_jitter(attempt, base=base, cap=cap, rng=rng)


def idle_connection_limit() -> int:
    """Connections IDLE may use per account: all but one, which stays free for sync."""
    return max(1, settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT - 1)


def error_text(exc: errors.ImapError) -> str:
    text = exc.message
    return text if exc.reason.lower() in text.lower() else f"{exc.reason}: {text}"


@dataclass(slots=True, frozen=True)
class AccountConfig:
    """What one account's connections need, loaded when its watcher starts (config_version)."""

    id: int
    owner_id: int
    host: str
    port: int
    security: str
    username: str
    password_encrypted: str
    version: int
    folders: tuple[str, ...]
    not_before: float = 0.0  # time.time() before which we must not connect (provider throttling)
    auth_method: str = Account.AuthMethod.PASSWORD

    @classmethod
    def from_row(cls, row: dict) -> "AccountConfig":
        not_before = 0.0
        if row["state"] == Account.State.THROTTLED and row["backoff_until"]:
            not_before = row["backoff_until"].timestamp()
        return cls(row["pk"], row["owner_id"], row["host"], row["port"], row["security"], row["username"],
                   row["password_encrypted"], row["config_version"],
                   tuple(row["push_folders"] or ("INBOX",)), not_before,
                   row.get("auth_method") or Account.AuthMethod.PASSWORD)

    @property
    def pk(self) -> int:  # imap.slots and imap.account_state take anything with a pk
        return self.id

    def account(self) -> Account:
        """An unsaved stand-in carrying only what imap.account_state needs (pk, owner)."""
        return Account(pk=self.id, owner_id=self.owner_id)


# Synchronous pieces, run in the manager's thread pool -----------------------------------------

def _idling(owner: str, config: AccountConfig, folder: str, all_up: bool) -> None:
    account_state.record_success(config.account())
    if all_up:
        leases.record_connected(owner, config.id)
    # After IDLE started, so nothing falls between the catch-up and the first push.
    enqueue_folder_sync(config.id, folder, reason="idle catch-up")


@live_writes()  # both writes ahead of the bulk lane on SQLite (mailgate/db_sqlite3/priority.py)
def push(owner: str, account_id: int, folder: str, flags_only: bool, received_at=None) -> None:
    """An IDLE push: note when it arrived, then queue the (coalesced) folder sync.

    In that order, so whoever sees the synced message also sees the push that brought it (a worker
    can store the message before a write queued after the sync would land). The note is best
    effort: failing to write it must not cost the sync.
    """
    try:
        leases.record_push(owner, account_id, received_at)
    except DatabaseError:
        log.warning("account %s: could not record the push time", account_id, exc_info=True)
    for attempt in range(3):
        try:
            enqueue_folder_sync(account_id, folder, flags_only=flags_only, reason="idle")
            break
        except DatabaseError:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))  # SQLite busy beyond its timeout, or a failover


class AccountWatcher:
    """Keeps one account's push folders idling until stopped (task cancellation)."""

    __slots__ = ("config", "manager", "tasks", "up", "slots", "clients", "stopped_by_owner")

    def __init__(self, config: AccountConfig, manager):
        self.config = config
        self.manager = manager
        self.tasks: list[asyncio.Task] = []
        self.up: set[str] = set()
        self.slots: dict[str, slots.Slot] = {}
        self.clients: dict[str, IdleClient] = {}
        self.stopped_by_owner = False  # the account is parked until the owner fixes its password

    @property
    def key(self) -> tuple:
        return self.config.version, self.config.folders

    def start(self) -> None:
        folders = self.config.folders[:idle_connection_limit()]
        if len(folders) < len(self.config.folders):
            log.warning("account %s: only %s of %s push folders are watched (MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT"
                        " keeps one connection for sync)", self.config.id, len(folders), len(self.config.folders))
        self.tasks = [asyncio.get_running_loop().create_task(self._watch(folder), name=f"idle:{self.config.id}:{folder}")
                      for folder in folders]

    def drop_unheld(self, renewed: set[str], kept: set[str]) -> None:
        """Drop every connection whose slot was `renewed` but is not `kept` (someone else took it
        after it expired): it would be one connection too many. It reconnects with a new slot."""
        for folder, slot in list(self.slots.items()):
            if slot.holder in renewed and slot.holder not in kept:
                log.warning("account %s %s: connection slot lost; reconnecting", self.config.id, folder)
                client = self.clients.get(folder)
                if client is not None:
                    client.abort()

    async def stop(self, timeout: float) -> None:
        """Cancel every connection: each says DONE and LOGOUT (see IdleClient.close)."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=timeout)

    # One connection -----------------------------------------------------------------------------
    async def _watch(self, folder: str) -> None:
        m = self.manager
        cfg = self.config
        attempt = 0
        wait = cfg.not_before - time.time()
        if wait > 0:
            await asyncio.sleep(min(wait, RECONNECT_MAX))
        while True:
            client = None
            idle_started = None
            try:
                async with m.connect_gate:
                    client = await self._open(folder)
                self.clients[folder] = client
                idle_started = time.monotonic()
                with metrics.idle_session():
                    await self._idle(client, folder)
            except (errors.ImapError, OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                error = self._classify(exc)
            except Exception as exc:  # a bug or the database: logged, and the connection retried
                log.exception("account %s %s: unexpected error", cfg.id, folder)
                error = errors.ProtocolError(f"unexpected error: {type(exc).__name__}")
            finally:
                self.clients.pop(folder, None)
                if client is not None:
                    await client.close(m.close_timeout)
                await self._release_slot(folder)
            self.up.discard(folder)
            if idle_started is not None and time.monotonic() - idle_started >= STABLE_AFTER:
                attempt = 0
            delay = backoff_delay(attempt)
            attempt += 1
            if isinstance(error, errors.Throttled) and error.backoff_seconds:
                delay = max(delay, error.backoff_seconds)
            if not error.retry or isinstance(error, errors.AuthenticationFailed):
                # The account's own state decides: a few refused logins are retried, then it stops.
                try:
                    backoff = await m.db(account_state.record_failure, cfg.account(), error)
                except DatabaseError:
                    log.warning("account %s: could not record %s", cfg.id, error.reason, exc_info=True)
                    backoff = delay
                if backoff is None:
                    log.warning("account %s: %s; not reconnecting until the owner acts", cfg.id, error_text(error))
                    self.stopped_by_owner = True
                    await m.db_quiet(leases.record_disconnected, m.name, cfg.id, error_text(error), reconnect=False)
                    return
                delay = max(delay, backoff)
            metrics.IDLE_RECONNECTS.labels(type(error).__name__).inc()
            log.info("account %s %s: %s; reconnecting in %.1f s", cfg.id, folder, error_text(error), delay)
            await m.db_quiet(leases.record_disconnected, m.name, cfg.id, error_text(error))
            # The exception's traceback holds the frames of the dead connection: let them go.
            del error
            await asyncio.sleep(delay)

    def _classify(self, exc: BaseException) -> errors.ImapError:
        if isinstance(exc, aioimaplib.AioImapException):
            return errors.ProtocolError(f"{self.config.host}:{self.config.port}: {str(exc)[:200] or type(exc).__name__}")
        return classify(exc, self.config)

    async def _open(self, folder: str) -> IdleClient:
        m = self.manager
        cfg = self.config
        if cfg.security == Account.Security.NONE and not is_loopback(cfg.host):
            raise errors.TlsFailure(f"refusing to log in without TLS to {cfg.host}: not a loopback host")
        password = None
        oauth_token = self._oauth_token if cfg.auth_method == Account.AuthMethod.OAUTH2 else None
        if oauth_token is None:
            try:
                password = crypto.decrypt(cfg.password_encrypted)
            except crypto.CredentialsUnreadable:
                raise errors.CredentialsNeedReentry(
                    "the stored password cannot be decrypted with the configured keys; enter it again") from None
        self.slots[folder] = await m.db(slots.claim_slot, cfg, f"idle {folder}"[:100], ttl=m.slot_ttl)
        client = IdleClient(cfg.host, cfg.port, tls=cfg.security, timeout=m.timeout,
                            ssl_context=m.ssl_context if cfg.security != Account.Security.NONE else None)
        try:
            await client.open(cfg.username, password, folder, oauth_token=oauth_token)
        except BaseException:
            client.abort()
            raise
        return client

    async def _oauth_token(self, stale_version):
        """The access token for the IdleClient, refreshed in the thread pool by one process at a time."""
        return await self.manager.db(tokens.access_token, self.config.id, stale_version=stale_version)

    async def _release_slot(self, folder: str) -> None:
        slot = self.slots.pop(folder, None)
        if slot is not None:
            try:
                await self.manager.db(slot.release)
            except DatabaseError:  # it expires by itself
                log.warning("could not release connection slot of account %s", self.config.id, exc_info=True)

    async def _idle(self, client: IdleClient, folder: str) -> None:
        m = self.manager
        await client.start_idle()
        self.up.add(folder)
        all_up = len(self.up) >= min(len(self.config.folders), idle_connection_limit())
        await m.db(_idling, m.name, self.config, folder, all_up)
        while True:
            deadline = time.monotonic() + m.renew_seconds
            while (remaining := deadline - time.monotonic()) > 0:
                self._handle(await client.wait_push(remaining), folder)
            # Renewal doubles as a liveness check: no answer to DONE or NOOP in time drops the connection.
            self._handle(await client.stop_idle(), folder)
            self._handle(await client.noop(), folder)
            await client.start_idle()

    def _handle(self, lines, folder: str) -> None:
        if not lines:
            return
        new, changed, bye = push_kinds(lines)
        log.debug("account %s %s: pushed %r", self.config.id, folder, lines)
        if new or changed:
            self.manager.push(self.config.id, folder, flags_only=not new, received_at=timezone.now())
        if bye:
            raise ConnectionLost(f"{self.config.host}:{self.config.port} closed the connection (BYE)")
