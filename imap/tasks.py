"""Batch sync as Django Q tasks: thin wrappers over imap/sync.py.

Entry points:
  * enqueue_folder_sync(account_id, folder_name, flags_only=False, reason="") - coalesced request,
    called by the IDLE manager on every push and by sync_account;
  * sync_account(account_id) - list folders, queue one sync_folder per folder;
  * sync_folder(account_id, folder_name, flags_only=False) - the work itself;
  * sync_all_accounts() - run by the django-q Schedule "imap: sync all accounts" every
    MAILGATE_SYNC_INTERVAL seconds; the schedule is created/updated by ensure_schedules(), which a
    post_migrate handler (imap/apps.py) calls, so `manage.py migrate` (run by scripts/run) keeps it
    in step with the setting.

IMAP failures are recorded on the account (imap/account_state.py: backoff, AUTH_FAILED, ...) and
the task returns normally: the next scheduled run or IDLE push retries once the backoff has passed.
Bugs raise, so they show up as failed tasks.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from imap import account_state, errors
from imap.models import Account, Folder

log = logging.getLogger(__name__)

FLAGS, FULL = "flags", "full"
SCHEDULE_NAME = "imap: sync all accounts"


def task_name(account_id, folder_name: str) -> str:
    # django-q keeps at most 100 characters of a task name.
    return f"sync:{account_id}:{folder_name}"[:100]


def enqueue_folder_sync(account_id: int, folder_name: str, flags_only: bool = False, reason: str = "") -> bool:
    """Ask for a sync of one folder; a burst of calls yields one queued task per folder.

    Cheap enough for every IDLE push: usually one UPDATE (two when a task is already queued).
    Coalescing is a compare-and-set on Folder.sync_pending, so it holds across processes: the
    caller that flips the marker from "" to a mode queues the task `sync:<account>:<folder>`
    (after the surrounding transaction commits); later callers find it set and return. A full-sync
    request upgrades a queued flags-only one. The task clears the marker when it starts, so a
    change that arrives during a sync queues one more. Returns True if this call queued a task.
    """
    mode = FLAGS if flags_only else FULL
    folder = Folder.objects.filter(account_id=account_id, name=folder_name)
    for _attempt in range(4):
        now = timezone.now()
        stale = now - timedelta(seconds=settings.MAILGATE_SYNC_PENDING_STALE)
        if folder.filter(Q(sync_pending="") | Q(sync_requested_at__lt=stale) | Q(sync_requested_at__isnull=True)
                         ).update(sync_pending=mode, sync_requested_at=now):
            transaction.on_commit(lambda: async_task(
                "imap.tasks.sync_folder", account_id, folder_name, flags_only=mode == FLAGS,
                task_name=task_name(account_id, folder_name)))
            log.debug("queued %s sync of %s/%s (%s)", mode, account_id, folder_name, reason)
            return True
        # A task is queued. A flags-only one must become full if that is what we need.
        pending_ok = (FLAGS, FULL) if mode == FLAGS else (FULL,)
        if mode == FULL and folder.filter(sync_pending=FLAGS).update(sync_pending=FULL):
            return False
        if folder.filter(sync_pending__in=pending_ok).exists():
            return False
        # The marker was cleared between our queries (the task just started) or the folder is new.
        if not Folder.objects.filter(account_id=account_id, name=folder_name).exists():
            if not Account.objects.filter(pk=account_id).exists():
                raise Account.DoesNotExist(f"no account {account_id}")
            Folder.objects.get_or_create(account_id=account_id, name=folder_name)
    return False  # pragma: no cover - four lost races in a row; the scheduled sync catches up


def _take_pending(account_id: int, folder_name: str) -> str:
    """Clear the folder's queued-sync marker and return the mode it asked for ("" if none)."""
    for _attempt in range(4):
        row = Folder.objects.filter(account_id=account_id, name=folder_name).values("pk", "sync_pending").first()
        if row is None or not row["sync_pending"]:
            return ""
        if Folder.objects.filter(pk=row["pk"], sync_pending=row["sync_pending"]).update(
                sync_pending="", sync_requested_at=None):
            return row["sync_pending"]
    return FULL


def sync_folder(account_id: int, folder_name: str, flags_only: bool = False) -> dict:
    """Sync one folder of one account now (the task queued by enqueue_folder_sync)."""
    from imap import sync

    pending = _take_pending(account_id, folder_name)
    flags_only = flags_only and pending != FULL
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"skipped": "account deleted"}
    report = sync.sync_account_now(account, folder_names=[folder_name], flags_only=flags_only)
    return report.as_dict()


def sync_account(account_id: int) -> dict:
    """List the account's folders and queue one (coalesced) sync_folder task per folder."""
    from imap import sync

    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"skipped": "account deleted"}
    try:
        folders = sync.refresh_folder_list(account)
    except errors.ImapError as exc:
        return {"account": account_id, "error": str(exc)}
    queued = [f.name for f in folders if enqueue_folder_sync(account_id, f.name, reason="account sync")]
    return {"account": account_id, "folders": len(folders), "queued": queued}


def sync_all_accounts() -> int:
    """Queue sync_account for every enabled account that is not stopped or backing off."""
    now = timezone.now()
    count = 0
    for account in Account.objects.filter(enabled=True).exclude(state__in=account_state.STOPPED_STATES):
        if account_state.blocked_reason(account, now) is None:
            async_task("imap.tasks.sync_account", account.pk, task_name=f"sync-account:{account.pk}")
            count += 1
    return count


def ensure_schedules(**_signal_kwargs) -> None:
    """Create or update the periodic "sync all accounts" schedule (idempotent)."""
    from django_q.models import Schedule

    minutes = max(1, round(settings.MAILGATE_SYNC_INTERVAL / 60))
    schedule, created = Schedule.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": "imap.tasks.sync_all_accounts", "schedule_type": Schedule.MINUTES,
                  "minutes": minutes, "repeats": -1,
                  "next_run": timezone.now() + timedelta(minutes=minutes)},
    )
    if not created and (schedule.minutes != minutes or schedule.schedule_type != Schedule.MINUTES
                        or schedule.func != "imap.tasks.sync_all_accounts"):
        schedule.func = "imap.tasks.sync_all_accounts"
        schedule.schedule_type = Schedule.MINUTES
        schedule.minutes = minutes
        schedule.repeats = -1
        schedule.save()
