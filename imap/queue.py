"""Requests for folder syncs: the coalesced queue between whoever asks (IDLE pushes, the periodic
account sync) and the sync_folder task (imap/tasks.py).

Tasks are named by their dotted path, so this module imports no entry point and no sync code.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from imap.models import Account, Folder
from mailgate.db_sqlite3.priority import live_writes
from pipeline.queue import Lane

log = logging.getLogger(__name__)

Pending = Folder.SyncPending


def task_name(account_id, folder_name: str) -> str:
    # django-q keeps at most 100 characters of a task name.
    return f"sync:{account_id}:{folder_name}"[:100]


@live_writes()  # an IDLE push's first step: ahead of the bulk lane on SQLite (mailgate/db_sqlite3)
def enqueue_folder_sync(account_id: int, folder_name: str, flags_only: bool = False, reason: str = "") -> bool:
    """Ask for a sync of one folder; a burst of calls yields one queued task per folder.

    Cheap enough for every IDLE push: usually one UPDATE (two when a task is already queued).
    Coalescing is a compare-and-set on Folder.sync_pending, so it holds across processes: the
    caller that flips the marker from NONE to a mode queues the task `sync:<account>:<folder>`
    (after the surrounding transaction commits); later callers find it set and return. A full-sync
    request upgrades a queued flags-only one. The task clears the marker when it starts, so a
    change that arrives during a sync queues one more. Returns True if this call queued a task.
    """
    mode = Pending.FLAGS if flags_only else Pending.FULL
    folder = Folder.objects.filter(account_id=account_id, name=folder_name)
    for _attempt in range(4):
        now = timezone.now()
        stale = now - timedelta(seconds=settings.MAILGATE_SYNC_PENDING_STALE)
        if folder.filter(Q(sync_pending=Pending.NONE) | Q(sync_requested_at__lt=stale)
                         | Q(sync_requested_at__isnull=True)).update(sync_pending=mode, sync_requested_at=now):
            # A folder's first sync downloads its whole history: the bulk lane's work, never in
            # the way of a push to another folder (docs/pipeline.md "Lanes").
            first = folder.filter(last_synced_at__isnull=True).exists()
            cluster = (Lane.BULK if first else Lane.LIVE).cluster
            transaction.on_commit(lambda: async_task(
                "imap.tasks.sync_folder", account_id, folder_name, flags_only=mode == Pending.FLAGS,
                task_name=task_name(account_id, folder_name), cluster=cluster))
            log.debug("queued %s sync of %s/%s (%s)", mode, account_id, folder_name, reason)
            return True
        # A task is queued. A flags-only one must become full if that is what we need.
        pending_ok = (Pending.FLAGS, Pending.FULL) if mode == Pending.FLAGS else (Pending.FULL,)
        if mode == Pending.FULL and folder.filter(sync_pending=Pending.FLAGS).update(sync_pending=Pending.FULL):
            return False
        if folder.filter(sync_pending__in=pending_ok).exists():
            return False
        # The marker was cleared between our queries (the task just started) or the folder is new.
        if not Folder.objects.filter(account_id=account_id, name=folder_name).exists():
            if not Account.objects.filter(pk=account_id).exists():
                raise Account.DoesNotExist(f"no account {account_id}")
            Folder.objects.get_or_create(account_id=account_id, name=folder_name)
    return False  # pragma: no cover - four lost races in a row; the scheduled sync catches up


def take_pending(account_id: int, folder_name: str) -> str:
    """Clear the folder's queued-sync marker and return the mode it asked for (NONE if none)."""
    for _attempt in range(4):
        row = Folder.objects.filter(account_id=account_id, name=folder_name).values("pk", "sync_pending").first()
        if row is None or not row["sync_pending"]:
            return Pending.NONE
        if Folder.objects.filter(pk=row["pk"], sync_pending=row["sync_pending"]).update(
                sync_pending=Pending.NONE, sync_requested_at=None):
            return row["sync_pending"]
    return Pending.FULL


def enqueue_account_sync(account_id: int) -> None:
    """Queue sync_account (list the folders, then one coalesced folder sync each)."""
    async_task("imap.tasks.sync_account", account_id, task_name=f"sync-account:{account_id}")
