"""`manage.py relay_history --account ID --since DATE [--dry-run]`: relay mail that was in the
mailbox before it was connected (never relayed by itself). Says how many messages it will queue
before it queues them; --dry-run stops there."""

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from pipeline import history
from pipeline.models import Message


def since_date(value: str) -> datetime.datetime:
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--since {value!r} is not a date (YYYY-MM-DD)") from None
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=timezone.get_current_timezone())


class Command(BaseCommand):
    help = "Relay an account's history (mail that was there before it was connected) from a date on."

    def add_arguments(self, parser):
        parser.add_argument("--account", type=int, required=True, help="account id")
        parser.add_argument("--since", required=True, help="relay history dated on or after this day (YYYY-MM-DD)")
        parser.add_argument("--dry-run", action="store_true", help="only say how many messages it would queue")

    def handle(self, *args, **opts):
        messages = Message.objects.filter(account_id=opts["account"])
        if not messages.exists():
            raise CommandError(f"no messages for an account with id {opts['account']}")
        since = since_date(opts["since"])
        count = history.relay(messages, since, dry_run=True)
        self.stdout.write(f"{count} history message(s) of account {opts['account']} dated on or after "
                          f"{since:%Y-%m-%d} {'would be' if opts['dry_run'] else 'will be'} queued for relay.")
        if opts["dry_run"] or not count:
            return
        relayed = history.relay(messages, since, by="relay_history")
        self.stdout.write(f"{relayed} message(s) queued.")
