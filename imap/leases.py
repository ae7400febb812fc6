"""Who runs each account's IDLE connection: leases on IdleSession rows and IdleManager heartbeats.

Any number of IDLE managers (processes, hosts) share the accounts. An IdleSession row is a lease:
a manager connects an account only while it holds the row (`lease_owner` = its name and
`lease_expires_at` in the future). Leases are taken by a compare-and-set UPDATE of rows that are
free or expired, and renewed by the holder's heartbeat; a manager that dies stops renewing and
another one takes its accounts over once the leases expire. A manager that cannot renew (database
unreachable) drops its connections before its leases can expire (see imap/idle/manager.py), so two
managers never hold one account's IDLE at once. Host clocks must agree to well within the lease.

Status fields (connected, idling since, last push, last error, reconnect count) are written only
under the lease (`lease_owner` = writer), so a manager that lost an account cannot overwrite the
status its successor writes.

Plain synchronous ORM functions: the manager calls them from a thread pool, never on its loop.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from imap.account_state import STOPPED_STATES  # never connected by IDLE until the owner acts
from imap.models import Account, IdleManager, IdleSession
from mailgate import realtime


def new_manager_name() -> str:
    """host:pid:random - unique per manager run, readable in admin."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"[:200]


def lease_seconds() -> float:
    return float(settings.MAILGATE_IDLE_LEASE_SECONDS)


def _until(now):
    return now + timedelta(seconds=lease_seconds())


# Managers ---------------------------------------------------------------------------------------

def beat(name: str) -> None:
    """Write this manager's heartbeat row (feeds /healthz and the live-manager count)."""
    now = timezone.now()
    if not IdleManager.objects.filter(name=name).update(heartbeat_at=now):
        host, _, rest = name.partition(":")
        IdleManager.objects.create(name=name, host=host[:255], pid=os.getpid(), heartbeat_at=now)


def live_managers(now=None) -> int:
    """Managers whose heartbeat is younger than a lease: the ones sharing the accounts."""
    now = now or timezone.now()
    return IdleManager.objects.filter(heartbeat_at__gte=now - timedelta(seconds=lease_seconds())).count()


def forget_manager(name: str) -> None:
    IdleManager.objects.filter(name=name).delete()


def prune_managers(older_than: float = 86400) -> int:
    """Delete heartbeat rows of managers dead for a day (killed ones never delete their own)."""
    cutoff = timezone.now() - timedelta(seconds=max(older_than, 10 * lease_seconds()))
    return IdleManager.objects.filter(heartbeat_at__lt=cutoff).delete()[0]


def fair_share(accounts: int, managers: int) -> int:
    """How many accounts one manager may hold: an even split plus a little slack.

    The slack keeps managers from shedding accounts back and forth over a rounding difference.
    """
    if accounts <= 0:
        return 0
    share = math.ceil(accounts / max(1, managers))
    return share + max(1, share // 20)


# Accounts ---------------------------------------------------------------------------------------

def wanted_accounts() -> dict[int, tuple[int, tuple[str, ...]]]:
    """{account id: (config_version, push folders)} of every account that should be idling."""
    rows = (Account.objects.filter(enabled=True).exclude(state__in=STOPPED_STATES)
            .values_list("pk", "config_version", "push_folders"))
    return {pk: (version, tuple(folders or ("INBOX",))) for pk, version, folders in rows}


CONFIG_FIELDS = ("pk", "owner_id", "host", "port", "security", "username", "password_encrypted",
                 "auth_method", "config_version", "push_folders", "state", "backoff_until")


def load_configs(account_ids) -> list[dict]:
    """The connection settings of these accounts (the password stays encrypted)."""
    return list(Account.objects.filter(pk__in=list(account_ids)).values(*CONFIG_FIELDS))


# Leases -----------------------------------------------------------------------------------------

def _free(now) -> Q:
    return Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def claim(owner: str, account_ids, limit: int) -> list[int]:
    """Take up to `limit` free or expired leases among `account_ids`; returns the ids won.

    The free rows are locked in pk order, skipping rows another manager is claiming at this moment
    (PostgreSQL; SQLite has one writer at a time): two managers never wait on each other, so they
    cannot deadlock, and the conditional UPDATE never takes a row twice (compare-and-set).
    """
    # Sorted: concurrent inserts of the same new rows in different orders could deadlock too.
    ids = sorted(account_ids)
    if limit <= 0 or not ids:
        return []
    try:
        IdleSession.objects.bulk_create([IdleSession(account_id=pk) for pk in ids], ignore_conflicts=True)
    except IntegrityError:  # an account was deleted since the caller listed it
        ids = list(Account.objects.filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
        IdleSession.objects.bulk_create([IdleSession(account_id=pk) for pk in ids], ignore_conflicts=True)
    now = timezone.now()
    with transaction.atomic():
        candidates = list(IdleSession.objects.select_for_update(skip_locked=True)
                          .filter(pk__in=ids).filter(_free(now)).order_by("pk")
                          .values_list("pk", flat=True)[:limit])
        if not candidates:
            return []
        until = _until(now)
        # The previous holder's status is stale: it is gone, whatever it last wrote.
        IdleSession.objects.filter(pk__in=candidates).filter(_free(now)).update(
            lease_owner=owner, lease_expires_at=until, connected=False, idling_since=None)
    return list(IdleSession.objects.filter(pk__in=candidates, lease_owner=owner, lease_expires_at=until)
                .values_list("pk", flat=True))


def renew(owner: str) -> set[int]:
    """Extend every lease `owner` still holds; returns their account ids (the rest were lost)."""
    IdleSession.objects.filter(lease_owner=owner).update(lease_expires_at=_until(timezone.now()))
    return set(IdleSession.objects.filter(lease_owner=owner).values_list("pk", flat=True))


def release(owner: str, account_ids=None) -> int:
    """Give leases back (shutdown, shedding, account disabled) so another manager may claim now."""
    rows = IdleSession.objects.filter(lease_owner=owner)
    if account_ids is not None:
        rows = rows.filter(pk__in=list(account_ids))
    return rows.update(lease_owner="", lease_expires_at=None, connected=False, idling_since=None)


# Status -----------------------------------------------------------------------------------------

def status(account_id: int) -> dict | None:
    """The IDLE status of one account as shown in admin, /healthz and the API."""
    row = (IdleSession.objects.filter(pk=account_id)
           .values("connected", "idling_since", "last_push_at", "last_error", "last_error_at",
                   "reconnect_count", "lease_owner", "lease_expires_at").first())
    if row is None:
        return None
    for key in ("idling_since", "last_push_at", "last_error_at", "lease_expires_at"):
        row[key] = row[key].isoformat() if row[key] else None
    return row


def _publish(account_id: int) -> None:
    account = Account.objects.filter(pk=account_id).only("owner_id").first()
    data = status(account_id)
    if account is None or data is None:
        return
    realtime.publish_for_account(account, "account.status", {"account_id": account_id, "idle": data})


def record_connected(owner: str, account_id: int) -> bool:
    """Every push folder of the account is idling: connected, error cleared, event published."""
    now = timezone.now()
    changed = IdleSession.objects.filter(pk=account_id, lease_owner=owner).update(
        connected=True, idling_since=now, last_error="")
    if changed:
        _publish(account_id)
    return bool(changed)


def record_disconnected(owner: str, account_id: int, error: str = "", *, reconnect: bool = True) -> bool:
    """A connection of the account dropped or failed (`error` is safe to show)."""
    now = timezone.now()
    values = {"connected": False, "idling_since": None}
    if error:
        values.update(last_error=error[:2000], last_error_at=now)
    if reconnect:
        values["reconnect_count"] = F("reconnect_count") + 1
    changed = IdleSession.objects.filter(pk=account_id, lease_owner=owner).update(**values)
    if changed:
        _publish(account_id)
    return bool(changed)


def record_push(owner: str, account_id: int, received_at=None) -> None:
    """Note when the latest push arrived (`received_at`, default now)."""
    IdleSession.objects.filter(pk=account_id, lease_owner=owner).update(last_push_at=received_at or timezone.now())
