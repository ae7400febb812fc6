"""GET /healthz: the state of every part mailgate needs, as JSON; HTTP 503 when one is down."""

import asyncio
import os
import shutil
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django_q.models import OrmQ

from mailgate import embedded_redis, storage
from mailgate.realtime import channel_layer


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True, "vendor": connection.vendor}


def _queue() -> dict:
    now = timezone.now()
    # The ORM broker sets `lock` to the enqueue time and pushes it into the future while a worker
    # holds the task, so waiting tasks are exactly those whose lock has passed.
    waiting = OrmQ.objects.filter(lock__lte=now)
    queued = waiting.count()
    oldest = waiting.order_by("lock").values_list("lock", flat=True).first()
    age = (now - oldest).total_seconds() if oldest else 0.0
    return {
        "ok": age < settings.MAILGATE_HEALTH_QUEUE_STALE,
        "queued": queued,
        "in_flight": OrmQ.objects.filter(lock__gt=now).count(),
        "oldest_age_seconds": round(age, 3),
    }


async def _layer_roundtrip() -> float:
    layer = channel_layer()
    started = time.monotonic()
    name = await layer.new_channel("healthz.")
    await layer.send(name, {"type": "healthz.ping"})
    await asyncio.wait_for(layer.receive(name), timeout=2)
    return time.monotonic() - started


def _channel_layer() -> dict:
    # Which Redis is meant is most useful when it is down, so this part reports its own failure.
    part = {"backend": settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1]}
    try:
        seconds = async_to_sync(_layer_roundtrip)()
    except Exception as exc:  # a health probe reports every failure instead of raising
        return {"ok": False, **part, "redis": embedded_redis.describe(), "error": _error(exc)}
    # Described after the round trip, which starts the embedded server if this process is first.
    return {"ok": True, **part, "redis": embedded_redis.describe(), "roundtrip_ms": round(seconds * 1000, 2)}


def _storage() -> dict:
    """Where raw mail and attachments live answers: the files dir is writable and has room for one
    more message of the largest size accepted (a full disk stops every sync: imap.errors.
    StorageFailed, reported here before the owners see their accounts stop), or the bucket
    answers a HEAD with these credentials (every host needs it, not just the one that stored a
    message)."""
    config = settings.MAILGATE_STORAGE
    if config is None:
        return {"ok": False, "kind": "misconfigured", "error": settings.MAILGATE_STORAGE_ERROR}
    if config.kind == "local":
        return _local_files(str(settings.MEDIA_ROOT))
    bucket = storage.default()
    started = time.monotonic()
    try:
        bucket.connection.meta.client.head_bucket(Bucket=bucket.bucket_name)
    except Exception as exc:  # a health probe reports every failure instead of raising
        return {"ok": False, "kind": "s3", "where": config.describe(), "error": _error(exc)}
    return {"ok": True, "kind": "s3", "where": config.describe(),
            "roundtrip_ms": round((time.monotonic() - started) * 1000, 2)}


def _local_files(root: str) -> dict:
    if not os.path.isdir(root):
        return {"ok": False, "kind": "local", "path": root, "error": "FilesDir: missing"}
    free = shutil.disk_usage(root).free
    writable = os.access(root, os.W_OK)  # False on a read-only mount too (EROFS)
    part = {"ok": writable and free >= settings.MAILGATE_MAX_MESSAGE_BYTES, "kind": "local",
            "free_bytes": free, "writable": writable, "path": root}
    if not part["ok"]:
        part["error"] = f"FilesDir: {'not writable' if not writable else 'less free space than one message'}"
    return part


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


# The ground's own parts; the composition root (mailgate/urls.py) adds the checks of the apps above
# (the IDLE manager's), so this module names none of them.
CHECKS = {
    "database": _database,
    "queue": _queue,
    "channel_layer": _channel_layer,
    "storage": _storage,
}


# Text a load balancer or a passer-by may read. Everything else that is text (IDLE manager names,
# which are host:pid, the embedded Redis socket path, exception messages naming hosts) is for staff.
PUBLIC_TEXT = ("backend", "vendor", "kind")


def _public(part: dict) -> dict:
    """What anyone may see of a part: its flags and numbers, a list as its length, an error as its
    type only; other text is left out."""
    shown = {}
    for key, value in part.items():
        if value is None or isinstance(value, (bool, int, float)):
            shown[key] = value
        elif isinstance(value, (list, tuple)):
            shown[key] = len(value)
        elif isinstance(value, dict):  # e.g. which Redis: its kind, not its socket path
            shown[key] = _public(value)
        elif key == "error":
            shown[key] = str(value).split(":", 1)[0]
        elif key in PUBLIC_TEXT:
            shown[key] = value
    return shown


def view(**app_checks):
    """The /healthz view over CHECKS plus `app_checks` (name -> function returning {"ok": ...}).

    Anonymous: the status code, each part's `ok`, counts and error types (enough for a load
    balancer or an uptime probe); staff users also get names, paths and error texts."""
    checks = {**CHECKS, **app_checks}

    @never_cache
    def healthz(request):
        body = {}
        for name, check in checks.items():
            try:
                body[name] = check()
            except Exception as exc:  # a health probe reports every failure instead of raising
                body[name] = {"ok": False, "error": _error(exc)}
        healthy = all(part["ok"] for part in body.values())
        if not request.user.is_staff:
            body = {name: _public(part) for name, part in body.items()}
        body["status"] = "ok" if healthy else "down"
        return JsonResponse(body, status=200 if healthy else 503)

    return healthz
