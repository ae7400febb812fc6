"""Delivery windows and digests (pipeline/scheduling.py), in the subscriber's time zone."""

from datetime import datetime, time, timezone

import pytest
from django.core.exceptions import ValidationError

from pipeline.models import Subscription
from pipeline.scheduling import in_window, next_send_time

UTC = timezone.utc


def sub(start=None, end=None, tz="UTC", mode="immediate", digest=None):
    return Subscription(window_start=start, window_end=end, timezone=tz, mode=mode, digest_time=digest)


def at(*args):
    return datetime(*args, tzinfo=UTC)


def test_without_a_window_it_goes_now():
    now = at(2025, 3, 1, 3, 0)
    assert next_send_time(sub(), now) == now


def test_inside_the_window_it_goes_now():
    now = at(2025, 3, 1, 10, 0)
    assert next_send_time(sub(time(9), time(17)), now) == now


def test_before_the_window_it_waits_for_the_window_to_open_today():
    assert next_send_time(sub(time(9), time(17)), at(2025, 3, 1, 7, 30)) == at(2025, 3, 1, 9, 0)


def test_after_the_window_it_waits_until_tomorrow():
    assert next_send_time(sub(time(9), time(17)), at(2025, 3, 1, 17, 0)) == at(2025, 3, 2, 9, 0)


def test_a_window_that_wraps_midnight_is_open_late_and_early():
    night = sub(time(22), time(6))
    assert next_send_time(night, at(2025, 3, 1, 23, 0)) == at(2025, 3, 1, 23, 0)
    assert next_send_time(night, at(2025, 3, 2, 5, 59)) == at(2025, 3, 2, 5, 59)
    assert next_send_time(night, at(2025, 3, 2, 12, 0)) == at(2025, 3, 2, 22, 0)


def test_windows_are_wall_clock_time_in_the_subscribers_zone():
    # 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    berlin = sub(time(9), time(17), tz="Europe/Berlin")
    assert next_send_time(berlin, at(2025, 1, 15, 6, 0)) == at(2025, 1, 15, 8, 0)
    assert next_send_time(berlin, at(2025, 7, 15, 6, 0)) == at(2025, 7, 15, 7, 0)


def test_a_window_opening_in_a_skipped_dst_hour_still_opens():
    # Berlin jumps from 02:00 to 03:00 on 2025-03-30: 02:30 does not exist that night.
    when = next_send_time(sub(time(2, 30), time(4), tz="Europe/Berlin"), at(2025, 3, 29, 23, 0))
    assert at(2025, 3, 30, 0, 0) < when <= at(2025, 3, 30, 2, 0)


def test_a_digest_goes_at_the_next_digest_time():
    digest = sub(tz="America/New_York", mode="digest", digest=time(18))
    assert next_send_time(digest, at(2025, 1, 15, 12, 0)) == at(2025, 1, 15, 23, 0)
    assert next_send_time(digest, at(2025, 1, 15, 23, 30)) == at(2025, 1, 16, 23, 0)


def test_equal_window_ends_mean_all_day():
    assert in_window(time(3), time(8), time(8))


def test_an_unknown_time_zone_is_rejected_with_a_clear_message():
    with pytest.raises(ValidationError) as err:
        sub(tz="Mars/Olympus").clean()
    assert "Unknown time zone 'Mars/Olympus'" in str(err.value)


def test_a_digest_without_a_time_is_rejected():
    with pytest.raises(ValidationError, match="digest time"):
        sub(mode="digest").clean()
