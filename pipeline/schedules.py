"""The pipeline's periodic tasks as Django Q schedules, created or updated after every migrate."""

import math

from django.conf import settings
from django_q.models import Schedule

from mailgate import schedules

SWEEP = "mailgate: pipeline sweeper"
PURGE = "mailgate: retention purge"


def ensure_schedules(**kwargs) -> None:
    # Django Q schedules in whole minutes (and its scheduler wakes every ~30 s), so a sweep
    # interval below a minute is rounded up; tests call pipeline.sweeper.sweep() directly.
    minutes = max(1, math.ceil(settings.MAILGATE_SWEEP_INTERVAL / 60))
    schedules.install(SWEEP, "pipeline.tasks.sweep", Schedule.MINUTES, minutes)
    schedules.install(PURGE, "pipeline.tasks.purge", Schedule.DAILY)
