"""At most MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT connections per account, across all processes.

Providers cap simultaneous connections per account (Gmail: 15, others fewer) and answer more with
"Too many simultaneous connections" or by throttling; every connection mailgate opens to an
account (sync, IDLE, UI batch actions, "Test connection") therefore claims an imap.ConnectionSlot
row first. A claim is a compare-and-set UPDATE of a free or expired row. A holder keeps its slot
alive for as long as its connection is open, renewing it every third of the TTL: synchronous
holders with a small renewer thread (Slot.keep_alive, which connection_slot starts), the IDLE
manager with one UPDATE for all its connections per heartbeat (renew_all). A holder that dies
without releasing frees its slot when `expires_at` passes.

    with connection_slot(account, "sync", wait=settings.MAILGATE_SLOT_WAIT) as slot:
        with open_mailbox(account) as mailbox:
            ...
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Q
from django.utils import timezone

from imap import errors
from imap.models import ConnectionSlot
from mailgate import metrics

log = logging.getLogger(__name__)

# How often a waiting claimant looks at the table again: short, since a UI request is waiting.
POLL_SECONDS = 0.25
# A release that meets a dropped database connection tries again on a fresh one, this many times
# over about 1 + 2 + ... pauses: a restart of PostgreSQL takes a second or two.
RELEASE_TRIES = 4
RELEASE_PAUSE = 1.0


def default_ttl() -> float:
    """MAILGATE_SLOT_TTL, or long enough for a few timed-out commands in a row."""
    return float(settings.MAILGATE_SLOT_TTL) or max(120.0, 4 * settings.MAILGATE_IMAP_TIMEOUT)


def in_use_message(limit: int) -> str:
    """What a user is told when every slot is taken (shown as is in the UI and the admin)."""
    return f"all {limit} connections of this account are in use; try again in a moment"


def new_holder() -> str:
    """host:pid:uuid: says who holds a slot (for admins) and is unique per claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:200]


@dataclass
class Slot:
    account_id: int
    slot: int
    holder: str
    ttl: float
    # The mailgate_imap_connections label this slot counts under; "" once released.
    counted_as: str = field(default="", compare=False)
    _renewer: "_Renewer | None" = field(default=None, repr=False, compare=False)

    def renew(self) -> bool:
        """Push the expiry forward; False if the slot expired and someone else took it."""
        return bool(ConnectionSlot.objects.filter(account_id=self.account_id, slot=self.slot,
                                                  holder=self.holder)
                    .update(expires_at=timezone.now() + timedelta(seconds=self.ttl)))

    def keep_alive(self) -> None:
        """Renew the slot every third of its TTL from a daemon thread until release().

        A thread rather than renewals between commands: one FETCH of large bodies, a slow server
        or a connection test left running past its deadline can each outlast the TTL, and the
        slot must count for as long as the connection is open, whatever the holder is doing.
        """
        if self._renewer is None:
            self._renewer = _Renewer(self)
            self._renewer.start()

    def release(self) -> None:
        if self._renewer is not None:
            self._renewer.stop()
            self._renewer = None
        if self.counted_as:
            metrics.IMAP_CONNECTIONS.labels(self.counted_as).dec()
            self.counted_as = ""
        for attempt in range(RELEASE_TRIES):
            try:
                ConnectionSlot.objects.filter(account_id=self.account_id, slot=self.slot, holder=self.holder).update(
                    holder="", purpose="", expires_at=None)
                return
            except DatabaseError:
                # A database restart dropped this process's connection mid-sync. Left alone, the
                # slot stayed taken for its whole TTL (2 minutes): every sync of the account then
                # waited for a slot and gave up (tests/test_faults.py). A fresh connection frees it
                # now; inside a transaction only the caller can recover, so it gets the error.
                connection = connections[ConnectionSlot.objects.db]
                if connection.in_atomic_block or attempt == RELEASE_TRIES - 1:
                    raise
                connection.close()
                time.sleep(RELEASE_PAUSE * (attempt + 1))


class _Renewer(threading.Thread):
    def __init__(self, slot: Slot):
        super().__init__(name=f"slot-{slot.account_id}-{slot.slot}", daemon=True)
        self.slot = slot
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.slot.ttl / 3):
                try:
                    if not self.slot.renew():
                        # Only after renewals failed for a whole TTL (database away): the holder
                        # finishes its work; the next claim starts clean.
                        log.error("connection slot %s of account %s expired and was taken while in use",
                                  self.slot.slot, self.slot.account_id)
                        return
                except DatabaseError:
                    log.warning("could not renew connection slot %s of account %s", self.slot.slot,
                                self.slot.account_id, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connection, if it opened one

    def stop(self) -> None:
        self.stopped.set()
        if self is not threading.current_thread():
            self.join(timeout=5)


def renew_all(holders, ttl: float) -> set[str]:
    """Renew every slot held by one of `holders`; return the holders that still hold theirs.

    The IDLE manager's renewal: one UPDATE per 500 connections per heartbeat instead of a thread
    or a query per connection. A holder missing from the result lost its slot (it expired while
    the database was away and someone else took it): its connection must go.
    """
    holders = list(holders)
    kept: set[str] = set()
    expires = timezone.now() + timedelta(seconds=ttl)
    for start in range(0, len(holders), 500):
        chunk = holders[start:start + 500]
        ConnectionSlot.objects.filter(holder__in=chunk).update(expires_at=expires)
        kept.update(ConnectionSlot.objects.filter(holder__in=chunk).values_list("holder", flat=True))
    return kept


def claim_slot(account, purpose: str, *, ttl: float | None = None, wait: float = 0.0,
               poll: float = POLL_SECONDS) -> Slot:
    """Claim a free slot of `account` or raise errors.TooManyConnections.

    With `wait` > 0, retries (polling the table) until that many seconds have passed.
    """
    ttl = ttl or default_ttl()
    limit = max(1, settings.MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT)
    holder = new_holder()
    deadline = time.monotonic() + wait
    while True:
        now = timezone.now()
        free = Q(holder="") | Q(expires_at__lt=now) | Q(expires_at__isnull=True)
        rows = ConnectionSlot.objects.filter(account_id=account.pk, slot__lt=limit)
        candidates = list(rows.filter(free).values_list("slot", flat=True))
        if not candidates and rows.count() < limit:
            ConnectionSlot.objects.bulk_create(
                [ConnectionSlot(account_id=account.pk, slot=n) for n in range(limit)], ignore_conflicts=True)
            candidates = list(rows.filter(free).values_list("slot", flat=True))
        for number in candidates:
            # Compare-and-set: only one claimant sees its UPDATE match the still-free row.
            if rows.filter(free, slot=number).update(holder=holder, purpose=purpose[:100],
                                                     expires_at=now + timedelta(seconds=ttl)):
                label = metrics.connection_purpose(purpose)
                metrics.IMAP_CONNECTIONS.labels(label).inc()
                return Slot(account.pk, number, holder, ttl, counted_as=label)
        if time.monotonic() >= deadline:
            raise errors.TooManyConnections(in_use_message(limit))
        time.sleep(poll)  # cross-process wait on a table: polled with a deadline


@contextmanager
def connection_slot(account, purpose: str, *, ttl: float | None = None, wait: float = 0.0):
    """Hold one of the account's connection slots, kept alive, for the duration of the block."""
    slot = claim_slot(account, purpose, ttl=ttl, wait=wait)
    try:
        slot.keep_alive()
        yield slot
    finally:
        slot.release()
