"""One installer for the periodic Django Q schedules every app keeps (sync all accounts, sweeper,
retention purge): created on the first migrate, brought in step with the settings on every later one.
"""

from datetime import timedelta

from django.utils import timezone
from django_q.models import Schedule


def install(name: str, func: str, schedule_type: str, minutes: int | None = None) -> Schedule:
    """Create the schedule `name` or update it to run `func` every `minutes` (MINUTES) or daily.

    A new MINUTES schedule first runs one interval from now, not at once: a fresh install has
    nothing to catch up on. An existing one keeps its next_run, so a migrate never makes every
    schedule fire together."""
    wanted = {"func": func, "schedule_type": schedule_type, "repeats": -1}
    if schedule_type == Schedule.MINUTES:
        wanted["minutes"] = minutes
    schedule, created = Schedule.objects.get_or_create(name=name, defaults={
        **wanted, **({"next_run": timezone.now() + timedelta(minutes=minutes)} if minutes else {})})
    if not created and any(getattr(schedule, key) != value for key, value in wanted.items()):
        for key, value in wanted.items():
            setattr(schedule, key, value)
        schedule.save()
    return schedule
