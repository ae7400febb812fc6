"""`manage.py idle`: run the IDLE manager in the foreground (the Procfile's `idle:` process).

Any number may run, on any hosts: leases (imap/leases.py) give each account exactly one IDLE
connection. SIGTERM or Ctrl-C ends IDLE (DONE), logs out and releases the leases within seconds.
"""

from django.core.management.base import BaseCommand

from imap.idle import run_foreground


class Command(BaseCommand):
    help = "Keep an IMAP IDLE connection open for every enabled account and queue a sync on each push."

    def handle(self, *args, **options):
        run_foreground()
