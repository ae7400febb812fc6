"""Batch sync as Django Q tasks: thin entry points over imap/sync.py and imap/queue.py.

  * sync_folder(account_id, folder_name, flags_only=False) - the work itself, queued (coalesced)
    by imap.queue.enqueue_folder_sync, which the IDLE manager calls on every push;
  * sync_account(account_id) - list folders, queue one sync_folder per folder;
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
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.db.models import Count, Min
from django.utils import timezone
from django_q.models import Schedule

from imap import account_state, errors, queue, sync
from imap.models import Account, Folder, IdleSession
from mailgate import metrics, schedules

SCHEDULE_NAME = "imap: sync all accounts"
log = logging.getLogger(__name__)


# A sync_folder task that fails on the database leaves nothing queued while the folder's marker
# still says "queued", so every push is coalesced into nothing until the marker turns stale
# (MAILGATE_SYNC_PENDING_STALE, 10 minutes). A database restart lasts seconds: the task waits
# it out (1 + 2 + 4 + 8 s, well inside the task timeout) and redoes the sync, which is
# idempotent (stored UIDs are never fetched again).
DATABASE_RETRY_DELAYS = (1, 2, 4, 8)


def sync_folder(account_id: int, folder_name: str, flags_only: bool = False) -> dict:
    """Sync one folder of one account now (the task queued by queue.enqueue_folder_sync)."""
    for delay in DATABASE_RETRY_DELAYS:
        try:
            return _sync_folder(account_id, folder_name, flags_only)
        except (OperationalError, InterfaceError):
            log.warning("sync of %s/%s met a database error; trying again in %s s", account_id, folder_name,
                        delay, exc_info=True)
            connections.close_all()  # the broken connection; the next query opens a fresh one
            time.sleep(delay)
    return _sync_folder(account_id, folder_name, flags_only)  # the last try: its error fails the task


def _sync_folder(account_id: int, folder_name: str, flags_only: bool) -> dict:
    pending = queue.take_pending(account_id, folder_name)
    flags_only = flags_only and pending != Folder.SyncPending.FULL
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"skipped": "account deleted"}
    synced_before = Folder.objects.filter(account_id=account_id, name=folder_name).values_list(
        "last_synced_at", flat=True).first()
    report = sync.sync_account_now(account, folder_names=[folder_name], flags_only=flags_only)
    if report.stats.new:
        _observe_push_to_stored(account_id, synced_before)
    return report.as_dict()


def _observe_push_to_stored(account_id: int, synced_before) -> None:
    """A sync stored new mail: if an IDLE push came after the folder's previous sync ended, this
    sync stored what it announced (also when the push arrived while this sync ran), so its latency
    is push -> now. Never for a folder's first sync: that one stores history, not a push's mail."""
    pushed = IdleSession.objects.filter(pk=account_id).values_list("last_push_at", flat=True).first()
    if pushed and synced_before and pushed > synced_before:
        metrics.PUSH_TO_STORED.observe(max(0.0, (timezone.now() - pushed).total_seconds()))


def backlog() -> list[tuple[str, int, float]]:
    """[("sync", folders with a sync queued, age of the oldest request in seconds)] for /metrics."""
    now = timezone.now()
    waiting = Folder.objects.exclude(sync_pending=Folder.SyncPending.NONE).aggregate(
        waiting=Count("pk"), oldest=Min("sync_requested_at"))
    oldest = waiting["oldest"]
    return [("sync", waiting["waiting"], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)]


def sync_account(account_id: int) -> dict:
    """List the account's folders and queue one (coalesced) sync_folder task per folder."""
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"skipped": "account deleted"}
    try:
        folders = sync.refresh_folder_list(account)
    except errors.ImapError as exc:
        return {"account": account_id, "error": str(exc)}
    queued = [f.name for f in folders if queue.enqueue_folder_sync(account_id, f.name, reason="account sync")]
    return {"account": account_id, "folders": len(folders), "queued": queued}


def sync_all_accounts() -> int:
    """Queue sync_account for every enabled account that is not stopped or backing off."""
    now = timezone.now()
    count = 0
    for account in Account.objects.filter(enabled=True).exclude(state__in=account_state.STOPPED_STATES):
        if account_state.blocked_reason(account, now) is None:
            queue.enqueue_account_sync(account.pk)
            count += 1
    return count


def ensure_schedules(**_signal_kwargs) -> None:
    """Create or update the periodic "sync all accounts" schedule (idempotent)."""
    minutes = max(1, round(settings.MAILGATE_SYNC_INTERVAL / 60))
    schedules.install(SCHEDULE_NAME, "imap.tasks.sync_all_accounts", Schedule.MINUTES, minutes)
