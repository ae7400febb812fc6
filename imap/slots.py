"""At most MAILGATE_MAX_CONNECTIONS_PER_ACCOUNT connections per account, across all processes.

Providers cap simultaneous connections per account (Gmail: 15, others fewer) and answer more with
"Too many simultaneous connections" or by throttling; every process on every host therefore claims
an imap.ConnectionSlot row before it connects. A claim is a compare-and-set UPDATE of a free or
expired row; a holder that dies without releasing frees its slot when `expires_at` passes, so
long-running holders renew it.

    with connection_slot(account, "sync") as slot:
        with open_mailbox(account) as mailbox:
            ...
            slot.renew()
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from imap import errors
from imap.models import ConnectionSlot


def default_ttl() -> float:
    # Long enough for a few timed-out commands in a row; holders renew between batches.
    return max(120.0, 4 * settings.MAILGATE_IMAP_TIMEOUT)


def new_holder() -> str:
    """host:pid:uuid: says who holds a slot (for admins) and is unique per claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:200]


@dataclass
class Slot:
    account_id: int
    slot: int
    holder: str
    ttl: float

    def renew(self) -> bool:
        """Push the expiry forward; False if the slot expired and someone else took it."""
        return bool(ConnectionSlot.objects.filter(account_id=self.account_id, slot=self.slot,
                                                  holder=self.holder)
                    .update(expires_at=timezone.now() + timedelta(seconds=self.ttl)))

    def release(self) -> None:
        ConnectionSlot.objects.filter(account_id=self.account_id, slot=self.slot, holder=self.holder).update(
            holder="", purpose="", expires_at=None)


def claim_slot(account, purpose: str, *, ttl: float | None = None, wait: float = 0.0,
               poll: float = 0.5) -> Slot:
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
                return Slot(account.pk, number, holder, ttl)
        if time.monotonic() >= deadline:
            raise errors.TooManyConnections(
                f"all {limit} connection slots of account {account.pk} are in use")
        time.sleep(poll)  # cross-process wait on a table: polled with a deadline


@contextmanager
def connection_slot(account, purpose: str, *, ttl: float | None = None, wait: float = 0.0):
    """Hold one of the account's connection slots for the duration of the block."""
    slot = claim_slot(account, purpose, ttl=ttl, wait=wait)
    try:
        yield slot
    finally:
        slot.release()
