"""The pipeline's periodic tasks as Django Q schedules, created or updated after every migrate."""

import math

from django.conf import settings

SWEEP = "mailgate: pipeline sweeper"
PURGE = "mailgate: retention purge"


def ensure_schedules(**kwargs) -> None:
    from django_q.models import Schedule

    # Django Q schedules in whole minutes (and its scheduler wakes every ~30 s), so a sweep
    # interval below a minute is rounded up; tests call pipeline.sweeper.sweep() directly.
    minutes = max(1, math.ceil(settings.MAILGATE_SWEEP_INTERVAL / 60))
    Schedule.objects.update_or_create(name=SWEEP, defaults={
        "func": "pipeline.tasks.sweep", "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1})
    Schedule.objects.update_or_create(name=PURGE, defaults={
        "func": "pipeline.tasks.purge", "schedule_type": Schedule.DAILY, "repeats": -1})
