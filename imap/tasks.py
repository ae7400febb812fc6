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


from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule

from imap import account_state, errors, queue, sync
from imap.models import Account, Folder
from mailgate import schedules

SCHEDULE_NAME = "imap: sync all accounts"


def sync_folder(account_id: int, folder_name: str, flags_only: bool = False) -> dict:
    """Sync one folder of one account now (the task queued by queue.enqueue_folder_sync)."""
    pending = queue.take_pending(account_id, folder_name)
    flags_only = flags_only and pending != Folder.SyncPending.FULL
    account = Account.objects.filter(pk=account_id).first()
    if account is None:
        return {"skipped": "account deleted"}
    report = sync.sync_account_now(account, folder_names=[folder_name], flags_only=flags_only)
    return report.as_dict()


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
