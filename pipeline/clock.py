"""The pipeline's one clock seam: every stage asks `clock.now()` for the time, so a test can move
time forward (monkeypatch `pipeline.clock.now`) instead of sleeping until a window opens."""

from django.utils import timezone


def now():
    return timezone.now()
