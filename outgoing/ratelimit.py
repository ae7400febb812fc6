"""Per-service rate limits, shared by every worker through the Service row.

A token bucket (Service.rate_per_minute, bucket_tokens, bucket_updated_at) refilled continuously
and claimed with a compare-and-set UPDATE, so two workers never spend the same token; and a hard
stop (Service.blocked_until) set from the service's own Retry-After, which every worker honours.
rate_per_minute = 0 means no limit of our own (Retry-After still applies).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from outgoing.models import Service

# The bucket holds this many seconds' worth of tokens: a short burst is fine, a minute's worth at
# once is what gets chat APIs to answer 429.
BURST_SECONDS = 10
# Lost compare-and-set races before we give up and tell the caller to come back shortly.
MAX_RACES = 20
RACE_WAIT = 0.2


def capacity(rate_per_minute: int) -> float:
    return max(1.0, rate_per_minute * BURST_SECONDS / 60)


_BUCKET_FIELDS = ("rate_per_minute", "bucket_tokens", "bucket_updated_at", "blocked_until")


def take_token(service, now=None, fresh: bool = False) -> float:
    """Spend one send's token. Returns 0 when the caller may send now, else the seconds to wait
    (nothing is spent then): reschedule the delivery that much later and call again.

    fresh=True: `service` was read from the database just now (the pipeline loads it with the
    delivery it claims), so the first try uses its values instead of reading them again. The
    compare-and-set still checks them; a lost race reads the row as usual."""
    for race in range(MAX_RACES):
        if fresh and race == 0:
            row = {name: getattr(service, name) for name in _BUCKET_FIELDS}
        else:
            row = Service.objects.filter(pk=service.pk).values(*_BUCKET_FIELDS).first()
        if row is None:
            return 0.0  # deleted meanwhile: the send itself will fail clearly
        current = now or timezone.now()
        if row["blocked_until"] and row["blocked_until"] > current:
            return (row["blocked_until"] - current).total_seconds()
        rate = row["rate_per_minute"]
        if not rate:
            return 0.0
        size = capacity(rate)
        updated = row["bucket_updated_at"]
        if updated is None:
            tokens = size
        else:
            elapsed = max(0.0, (current - updated).total_seconds())  # clocks of two workers may differ
            tokens = min(size, row["bucket_tokens"] + elapsed * rate / 60)
        if tokens < 1:
            return (1 - tokens) * 60 / rate
        same_state = Q(bucket_updated_at=updated) if updated is not None else Q(bucket_updated_at__isnull=True)
        won = (Service.objects.filter(same_state, pk=service.pk, bucket_tokens=row["bucket_tokens"])
               .update(bucket_tokens=tokens - 1, bucket_updated_at=max(current, updated or current)))
        if won:
            return 0.0
    return RACE_WAIT


def block_for(service, seconds: float, now=None) -> None:
    """Honour a Retry-After: no worker sends through this service for `seconds`. Never shortens
    a block already in place."""
    until = (now or timezone.now()) + timedelta(seconds=max(0.0, seconds))
    (Service.objects.filter(pk=service.pk)
     .filter(Q(blocked_until__isnull=True) | Q(blocked_until__lt=until))
     .update(blocked_until=until))
