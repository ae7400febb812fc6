"""When a delivery may go: inside the subscriber's delivery window, or at their digest time.

Windows are wall-clock times in the subscription's time zone (zoneinfo), so they follow DST.
A window whose end is before its start wraps midnight (22:00–06:00); equal ends mean all day.
DIGEST subscriptions get each message at the next digest_time: one delivery per message, all due
at the same moment, sent together as one digest (pipeline/digest.py).
"""

from datetime import datetime, time, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"Unknown time zone {name!r}; use an IANA name such as Europe/Berlin.") from None


def in_window(local: time, start: time, end: time) -> bool:
    if start == end:
        return True
    if start < end:
        return start <= local < end
    return local >= start or local < end  # wraps midnight


def _next_local(local_now: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The first moment at or after local_now whose wall-clock time is `at`."""
    for days in range(0, 3):
        day = local_now.date() + timedelta(days=days)
        candidate = datetime.combine(day, at, tzinfo=tz)
        # A wall time skipped by a DST jump does not exist; zoneinfo maps it past the gap.
        if candidate.astimezone(dt_timezone.utc) >= local_now.astimezone(dt_timezone.utc):
            return candidate
    raise AssertionError("unreachable: a wall-clock time recurs within two days")


def subscription_zone(subscription) -> ZoneInfo:
    """The subscription's time zone; UTC for one saved without clean() (deliver rather than never)."""
    try:
        return zone(subscription.timezone)
    except ValidationError:
        return ZoneInfo("UTC")


def next_send_time(subscription, now: datetime) -> datetime:
    """The earliest moment (UTC) at or after `now` at which this subscription may receive mail."""
    tz = subscription_zone(subscription)
    local_now = now.astimezone(tz)
    if subscription.mode == "digest" and subscription.digest_time is not None:
        return _next_local(local_now, subscription.digest_time, tz).astimezone(dt_timezone.utc)
    start, end = subscription.window_start, subscription.window_end
    if start is None or end is None or in_window(local_now.time(), start, end):
        return now
    return _next_local(local_now, start, tz).astimezone(dt_timezone.utc)
