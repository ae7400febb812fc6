"""The IDLE manager's part of /healthz (mailgate/health.py): is one alive, and how many accounts idle."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from imap.models import Account, IdleManager, IdleSession


def idle_manager() -> dict:
    fresh = timezone.now() - timedelta(seconds=settings.MAILGATE_HEALTH_IDLE_STALE)
    managers = list(IdleManager.objects.filter(heartbeat_at__gte=fresh).values_list("name", flat=True))
    enabled = Account.objects.filter(enabled=True).count()
    connected = IdleSession.objects.filter(connected=True, lease_expires_at__gte=timezone.now()).count()
    return {"ok": bool(managers), "managers": managers, "accounts_enabled": enabled,
            "accounts_connected": connected}
